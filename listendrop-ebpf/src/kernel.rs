//! Reads of kernel objects (`struct sock`, `struct sk_buff`) at offsets taken from the
//! running kernel's BTF. Every read goes through `bpf_probe_read_kernel` (5.5+), which
//! returns an error instead of faulting on a bad pointer.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use listendrop_common::{DropEvent, ListenerKey, AF_INET, AF_INET6};

use crate::config::off;

/// Reads a `T` at `base + offset`.
#[inline(always)]
fn read<T>(base: *const u8, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies into a local and fails cleanly on any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
}

/// Fills the listener part of `key` from the listening socket `sk` and returns the accept
/// queue (length, limit) at this moment.
#[inline(always)]
pub(crate) fn read_listener(sk: *const u8, key: &mut ListenerKey) -> Result<(u32, u32), i32> {
    let family: u16 = read(sk, off!(sk_family))?;
    key.family = family;
    key.port = read(sk, off!(sk_num))?;
    if family == AF_INET6 {
        key.addr = read(sk, off!(sk_v6_rcv_saddr))?;
    } else {
        let v4: [u8; 4] = read(sk, off!(sk_rcv_saddr))?;
        key.addr[..4].copy_from_slice(&v4);
    }
    // possible_net_t is a struct holding one `struct net *` (NULL-free on every kernel
    // with CONFIG_NET_NS; without it the pointer is &init_net).
    let net: *const u8 = read(sk, off!(sk_net))?;
    key.netns = read(net, off!(net_ns_inum))?;
    let len: u32 = read(sk, off!(sk_ack_backlog))?;
    let max: u32 = read(sk, off!(sk_max_ack_backlog))?;
    Ok((len, max))
}

/// Fills the 4-tuple of `event` from the IP and TCP headers of `skb`.
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
