//! Reads of kernel objects (`struct sock`, `struct sk_buff`, `struct net`, per-CPU MIB
//! counters) at offsets taken from the running kernel's BTF. Every read goes through
//! `bpf_probe_read_kernel` (5.5+), which fails cleanly instead of faulting.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel};
use listendrop_common::{DropEvent, ListenerKey, AF_INET, AF_INET6};

use crate::config::{load64, off, OFFSETS};

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub(crate) fn read<T>(base: *const u8, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies into a local and fails cleanly on any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
}

/// The listener's network namespace (`sock_net(sk)`).
#[inline(always)]
pub(crate) fn net_of(sk: *const u8) -> Result<*const u8, i32> {
    // possible_net_t is a struct holding one `struct net *` (&init_net without NET_NS).
    read(sk, off!(sk_net))
}

/// Fills the listener key of `event` (without the reason) from the listening socket `sk`
/// and returns the listener's namespace: the reads every counted event needs.
#[inline(always)]
pub(crate) fn read_listener(sk: *const u8, event: &mut DropEvent) -> Result<*const u8, i32> {
    let key: &mut ListenerKey = &mut event.listener;
    let family: u16 = read(sk, off!(sk_family))?;
    key.family = family;
    key.port = read(sk, off!(sk_num))?;
    if family == AF_INET6 {
        key.addr = read(sk, off!(sk_v6_rcv_saddr))?;
    } else {
        let v4: [u8; 4] = read(sk, off!(sk_rcv_saddr))?;
        key.addr[..4].copy_from_slice(&v4);
    }
    let net = net_of(sk)?;
    key.netns = read(net, off!(net_ns_inum))?;
    Ok(net)
}

/// Fills the queues and the cookie of `event`: only for events handed to the daemon.
#[inline(always)]
pub(crate) fn read_queues(sk: *const u8, event: &mut DropEvent) -> Result<(), i32> {
    event.accept_queue_len = read(sk, off!(sk_ack_backlog))?;
    event.accept_queue_max = read(sk, off!(sk_max_ack_backlog))?;
    event.syn_queue_len = read(sk, off!(icsk_syn_qlen))?;
    event.cookie = read(sk, off!(sk_cookie))?;
    Ok(())
}

/// Whether `sk` is in TCP_LISTEN (a Fast Open SYN-ACK retransmit carries the child).
#[inline(always)]
pub(crate) fn is_listener(sk: *const u8) -> bool {
    /// `TCP_LISTEN` in `enum tcp_state` (all kernels; part of the UAPI numbering).
    const TCP_LISTEN: u8 = 10;
    read::<u8>(sk, off!(sk_state)).is_ok_and(|s| s == TCP_LISTEN)
}

/// Fills the 4-tuple of `event` from the IP and TCP headers of `skb`; client = source.
///
/// `head + network_header` / `head + transport_header` stay valid after the TCP receive
/// path has pulled the headers (all kernels).
#[inline(always)]
pub(crate) fn read_tuple(skb: *const u8, event: &mut DropEvent) -> Result<(), i32> {
    let head: *const u8 = read(skb, off!(skb_head))?;
    let network: u16 = read(skb, off!(skb_network_header))?;
    let transport: u16 = read(skb, off!(skb_transport_header))?;
    let ip = head.wrapping_add(network as usize);
    let version_ihl: u8 = read(ip, 0)?;
    match version_ihl >> 4 {
        4 => {
            event.family = AF_INET;
            let src: [u8; 4] = read(ip, 12)?;
            let dst: [u8; 4] = read(ip, 16)?;
            event.saddr[..4].copy_from_slice(&src);
            event.daddr[..4].copy_from_slice(&dst);
        }
        6 => {
            event.family = AF_INET6;
            event.saddr = read(ip, 8)?;
            event.daddr = read(ip, 24)?;
        }
        _ => return Err(-1),
    }
    let ports: [u8; 4] = read(head.wrapping_add(transport as usize), 0)?;
    event.sport = u16::from_be_bytes([ports[0], ports[1]]);
    event.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(())
}

/// A per-namespace sysctl stored as `int` (5.x) or `u8` (6.0+): `size` says which.
#[inline(always)]
pub(crate) fn read_sysctl(net: *const u8, offset: usize, size: usize) -> Result<u32, i32> {
    if size == 1 {
        Ok(u32::from(read::<u8>(net, offset)?))
    } else {
        read::<u32>(net, offset)
    }
}

/// Whether the namespace `net` answers ACK-time overflows with a reset.
#[inline(always)]
pub(crate) fn abort_on_overflow(net: *const u8) -> bool {
    read_sysctl(
        net,
        off!(net_abort_on_overflow),
        off!(net_abort_on_overflow_size),
    )
    .is_ok_and(|v| v != 0)
}

/// The namespace's TCP MIB counters listendrop classifies with, on this CPU.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Mib {
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub reqq_full_drop: u64,
    pub syncookies_sent: u64,
}

/// Reads this CPU's copy of `net->mib.net_statistics` (the per-CPU counters behind
/// `nstat`'s TcpExt lines). Within one softirq call on one CPU nothing else moves them,
/// so the difference across a call is exactly what that call counted.
#[inline(always)]
pub(crate) fn read_mib(net: *const u8) -> Result<Mib, i32> {
    let table = load64(&raw const OFFSETS.per_cpu_offset);
    if table == 0 {
        return Err(-1);
    }
    // SAFETY: a helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize;
    let cpu_offset: u64 = read(table as *const u8, cpu.wrapping_mul(8))?;
    let percpu: u64 = read(net, off!(net_mib))?;
    let mibs = percpu.wrapping_add(cpu_offset) as *const u8;
    Ok(Mib {
        listen_overflows: read(mibs, off!(mib_listen_overflows) * 8)?,
        listen_drops: read(mibs, off!(mib_listen_drops) * 8)?,
        reqq_full_drop: read(mibs, off!(mib_reqq_full_drop) * 8)?,
        syncookies_sent: read(mibs, off!(mib_syncookies_sent) * 8)?,
    })
}
