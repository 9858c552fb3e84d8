//! Reads of kernel objects (`struct sock`, `struct request_sock`, `struct sk_buff`,
//! `struct net`, per-CPU MIB counters) at offsets taken from the running kernel's BTF.
//!
//! Two ways to read, chosen per program by the [`Read`] type parameter:
//! - [`Probed`]: `bpf_probe_read_kernel` (5.5+), for untyped pointers (kprobe registers,
//!   raw tracepoint arguments, classic tracepoint records, per-CPU and packet memory); it
//!   fails cleanly on any address.
//! - [`Typed`]: a plain load, for pointers the verifier knows the BTF type of (tp_btf and
//!   fentry arguments, and pointers loaded through them). The offset is a field of a
//!   frozen `.rodata` global, hence a constant the verifier checks against the type (5.5+);
//!   a few ns instead of a helper call. Only fields inside the pointed-to struct can be
//!   read this way (`struct sock`'s own, not `inet_connection_sock`'s).

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use listendrop_common::{DropEvent, ListenerKey, AF_INET, AF_INET6};

use crate::config::off;

/// A way to read kernel memory.
pub(crate) trait Read {
    /// Reads a `T` at `base + offset`.
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32>;
}

/// Reads through `bpf_probe_read_kernel`.
pub(crate) enum Probed {}

impl Read for Probed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: bpf_probe_read_kernel copies into a local and fails cleanly on any
        // address.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
    }
}

/// Reads with a plain load through a BTF-typed pointer.
pub(crate) enum Typed {}

impl Read for Typed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: only called on pointers the verifier knows the BTF type of, at offsets
        // of that type's fields resolved from the running kernel's BTF; the verifier
        // checks each load against the type and makes a faulting one read zero
        // (PROBE_MEM, 5.5+). NULL is tested by the callers first.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset).cast::<T>()) })
    }
}

/// Reads a `T` at `base + offset` with `bpf_probe_read_kernel`.
#[inline(always)]
pub(crate) fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
    Probed::at(base, offset)
}

/// The socket's network namespace (`sock_net(sk)`).
#[inline(always)]
pub(crate) fn net_of<R: Read>(sk: *const u8) -> Result<*const u8, i32> {
    // possible_net_t is a struct holding one `struct net *` (&init_net without NET_NS).
    R::at(sk, off!(sk_net))
}

/// Fills the listener key of `event` (without the reason) from the listening socket `sk`
/// and returns the listener's namespace: the reads every counted event needs.
#[inline(always)]
pub(crate) fn read_listener<R: Read>(
    sk: *const u8,
    event: &mut DropEvent,
) -> Result<*const u8, i32> {
    let key: &mut ListenerKey = &mut event.listener;
    let family: u16 = R::at(sk, off!(sk_family))?;
    key.family = family;
    key.port = R::at(sk, off!(sk_num))?;
    if family == AF_INET6 {
        key.addr = R::at(sk, off!(sk_v6_rcv_saddr))?;
    } else {
        let v4: [u8; 4] = R::at(sk, off!(sk_rcv_saddr))?;
        key.addr[..4].copy_from_slice(&v4);
    }
    let net = net_of::<R>(sk)?;
    key.netns = R::at(net, off!(net_ns_inum))?;
    Ok(net)
}

/// The listener's accept queue: (length, limit).
#[inline(always)]
pub(crate) fn accept_queue<R: Read>(sk: *const u8) -> Result<(u32, u32), i32> {
    Ok((
        R::at(sk, off!(sk_ack_backlog))?,
        R::at(sk, off!(sk_max_ack_backlog))?,
    ))
}

/// Fills the queues and the cookie of `event`: only for events handed to the daemon. The
/// SYN queue lies past `struct sock` (in `inet_connection_sock`): always read through the
/// helper.
#[inline(always)]
pub(crate) fn read_queues<R: Read>(sk: *const u8, event: &mut DropEvent) -> Result<(), i32> {
    (event.accept_queue_len, event.accept_queue_max) = accept_queue::<R>(sk)?;
    event.cookie = R::at(sk, off!(sk_cookie))?;
    event.syn_queue_len = read(sk, off!(icsk_syn_qlen))?;
    Ok(())
}

/// `TCP_LISTEN` in `enum tcp_state` (all kernels; part of the UAPI numbering).
pub(crate) const TCP_LISTEN: u8 = 10;

/// Whether `sk` is in TCP_LISTEN (a Fast Open SYN-ACK retransmit carries the child).
#[inline(always)]
pub(crate) fn is_listener<R: Read>(sk: *const u8) -> bool {
    R::at::<u8>(sk, off!(sk_state)).is_ok_and(|s| s == TCP_LISTEN)
}

/// Fills the 4-tuple of `event` from the IP and TCP headers of `skb`; client = source.
///
/// `head + network_header` / `head + transport_header` stay valid after the TCP receive
/// path has pulled the headers (all kernels). The headers themselves are packet memory,
/// read through the helper whatever `R` is: one read when the TCP header follows a
/// header without options or extension headers (nearly always), two otherwise.
#[inline(always)]
pub(crate) fn read_tuple<R: Read>(skb: *const u8, event: &mut DropEvent) -> Result<(), i32> {
    /// `ETH_P_IP` and `ETH_P_IPV6` as `skb->protocol` holds them (network order).
    const IPV4: u16 = 0x0800_u16.to_be();
    const IPV6: u16 = 0x86dd_u16.to_be();
    let head: *const u8 = R::at(skb, off!(skb_head))?;
    let network: u16 = R::at(skb, off!(skb_network_header))?;
    let transport: u16 = R::at(skb, off!(skb_transport_header))?;
    let protocol: u16 = R::at(skb, off!(skb_protocol))?;
    let ip = head.wrapping_add(network as usize);
    let tcp = head.wrapping_add(transport as usize);
    let options = transport.wrapping_sub(network);
    let ports: [u8; 4] = match protocol {
        IPV4 if options == 20 => {
            // Addresses at 12..20, ports right after the header.
            let h: [u8; 12] = read(ip, 12)?;
            event.saddr[..4].copy_from_slice(&h[..4]);
            event.daddr[..4].copy_from_slice(&h[4..8]);
            [h[8], h[9], h[10], h[11]]
        }
        IPV4 => {
            let addrs: [u8; 8] = read(ip, 12)?;
            event.saddr[..4].copy_from_slice(&addrs[..4]);
            event.daddr[..4].copy_from_slice(&addrs[4..]);
            read(tcp, 0)?
        }
        IPV6 if options == 40 => {
            let h: ([[u8; 16]; 2], [u8; 4]) = read(ip, 8)?;
            (event.saddr, event.daddr) = (h.0[0], h.0[1]);
            h.1
        }
        IPV6 => {
            let addrs: [[u8; 16]; 2] = read(ip, 8)?;
            (event.saddr, event.daddr) = (addrs[0], addrs[1]);
            read(tcp, 0)?
        }
        _ => return Err(-1),
    };
    event.family = if protocol == IPV4 { AF_INET } else { AF_INET6 };
    event.sport = u16::from_be_bytes([ports[0], ports[1]]);
    event.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(())
}

/// Fills the 4-tuple of `event` from a request socket (`struct request_sock`, whose
/// `__req_common` is a `struct sock_common` at offset 0 like `struct sock`'s, so the
/// `sk_*` offsets apply; the daemon checks that). Client = remote end.
#[inline(always)]
pub(crate) fn read_request_tuple<R: Read>(
    req: *const u8,
    event: &mut DropEvent,
) -> Result<(), i32> {
    let family: u16 = R::at(req, off!(sk_family))?;
    if family == AF_INET6 {
        event.family = AF_INET6;
        event.saddr = R::at(req, off!(sk_v6_daddr))?;
        event.daddr = R::at(req, off!(sk_v6_rcv_saddr))?;
    } else {
        event.family = AF_INET;
        let client: [u8; 4] = R::at(req, off!(sk_daddr))?;
        let server: [u8; 4] = R::at(req, off!(sk_rcv_saddr))?;
        event.saddr[..4].copy_from_slice(&client);
        event.daddr[..4].copy_from_slice(&server);
    }
    let dport: u16 = R::at(req, off!(sk_dport))?;
    event.sport = u16::from_be(dport);
    event.dport = R::at(req, off!(sk_num))?;
    Ok(())
}

/// A per-namespace sysctl stored as `int` (5.x) or `u8` (6.0+): `size` says which.
#[inline(always)]
pub(crate) fn read_sysctl<R: Read>(net: *const u8, offset: usize, size: usize) -> Result<u32, i32> {
    if size == 1 {
        Ok(u32::from(R::at::<u8>(net, offset)?))
    } else {
        R::at::<u32>(net, offset)
    }
}

/// Whether the namespace `net` answers ACK-time overflows with a reset.
#[inline(always)]
pub(crate) fn abort_on_overflow<R: Read>(net: *const u8) -> bool {
    read_sysctl::<R>(
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

/// Per CPU: slot [`CPU_OFFSET`] caches the CPU's per-CPU offset (0: not yet known), slot
/// [`LAUNDER`] is scratch space. The element address a lookup returns is this CPU's copy:
/// with the map's own per-CPU pointer of that element, it gives the offset.
#[map]
static PERCPU: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Slot of [`PERCPU`] caching the offset.
const CPU_OFFSET: u32 = 0;
/// Slot of [`PERCPU`] used to turn the map's address into a number.
const LAUNDER: u32 = 1;

/// This CPU's per-CPU offset: what turns a per-CPU pointer (`alloc_percpu`, `__percpu`)
/// into the address of this CPU's copy, as the kernel's `this_cpu_ptr` does.
///
/// Found without `__per_cpu_offset` (a data symbol in `/proc/kallsyms` only with
/// CONFIG_KALLSYMS_ALL=y, which Debian's arm64 5.10 and 6.1 kernels lack, and readable only
/// with CAP_SYSLOG): a lookup in a per-CPU array returns this CPU's copy of the element
/// (`this_cpu_ptr(array->pptrs[0])`), and the map itself holds `pptrs[0]`. Their difference
/// is the offset, computed once per CPU (offsets are fixed at boot). Reading the map's
/// memory needs its address as a number: stored into and loaded back from a map value,
/// which the verifier allows a program loaded with CAP_PERFMON or CAP_SYS_ADMIN (pointer
/// leaks are allowed to them, 5.8+; root before).
#[inline(always)]
fn cpu_offset() -> Result<u64, i32> {
    let cached = PERCPU.get_ptr_mut(CPU_OFFSET).ok_or(-1)?;
    // SAFETY: a valid pointer to this CPU's element, for this program's run only.
    let known = unsafe { core::ptr::read_volatile(cached) };
    if known != 0 {
        return Ok(known);
    }
    let scratch = PERCPU.get_ptr_mut(LAUNDER).ok_or(-1)?;
    // Both addresses as plain numbers: the verifier refuses arithmetic on a map value
    // pointer with an unknown number (checked on 5.10, 6.1 and 6.18).
    let launder = |address: u64| {
        // SAFETY: as above; the volatile store and load keep the compiler from folding
        // the round trip away (the verifier then sees a number, not a pointer).
        unsafe {
            core::ptr::write_volatile(scratch, address);
            core::ptr::read_volatile(scratch)
        }
    };
    let map = launder((&raw const PERCPU) as u64);
    let here = launder(cached as u64);
    let percpu: u64 = read(map as *const u8, off!(bpf_array_pptrs))?;
    let offset = here.wrapping_sub(percpu);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(cached, offset) };
    Ok(offset)
}

/// Reads this CPU's copy of `net->mib.net_statistics` (the per-CPU counters behind
/// `nstat`'s TcpExt lines). Within one softirq call on one CPU nothing else moves them,
/// so the difference across a call is exactly what that call counted.
#[inline(always)]
pub(crate) fn read_mib(net: *const u8) -> Result<Mib, i32> {
    if off!(bpf_array_pptrs) == 0 {
        return Err(-1);
    }
    let cpu_offset = cpu_offset()?;
    let percpu: u64 = read(net, off!(net_mib))?;
    let mibs = percpu.wrapping_add(cpu_offset) as *const u8;
    Ok(Mib {
        listen_overflows: read(mibs, off!(mib_listen_overflows) * 8)?,
        listen_drops: read(mibs, off!(mib_listen_drops) * 8)?,
        reqq_full_drop: read(mibs, off!(mib_reqq_full_drop) * 8)?,
        syncookies_sent: read(mibs, off!(mib_syncookies_sent) * 8)?,
    })
}
