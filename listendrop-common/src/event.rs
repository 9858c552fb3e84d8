//! One dropped handshake, as pushed to the `EVENTS` ring buffer.

use crate::ListenerKey;

/// A dropped handshake: the listener (with the reason), the packet's 4-tuple, and the
/// accept queue at that moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()` at the drop (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// The listener and the reason; the same key the counters use.
    pub listener: ListenerKey,
    /// Accept queue length (`sk_ack_backlog`) when the packet was dropped.
    pub accept_queue_len: u32,
    /// Client (packet source) address, network byte order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    /// Server (packet destination) address, network byte order; IPv4 in the first 4 bytes.
    pub daddr: [u8; 16],
    /// Client port, host byte order.
    pub sport: u16,
    /// Server port, host byte order.
    pub dport: u16,
    /// Address family of the packet (and of `saddr`/`daddr`): an IPv4 client of an IPv6
    /// wildcard listener has [`crate::AF_INET`] here and `AF_INET6` in the listener.
    pub family: u16,
    /// Explicit padding (always zero).
    pub _pad0: u16,
    /// Accept queue limit (`sk_max_ack_backlog`): min(listen() backlog, somaxconn).
    pub accept_queue_max: u32,
    /// Explicit padding (always zero).
    pub _pad1: u32,
}

impl DropEvent {
    /// An all-zero event, the starting point the eBPF side fills in.
    pub const ZERO: Self = Self {
        ktime_ns: 0,
        listener: ListenerKey::ZERO,
        accept_queue_len: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        family: 0,
        _pad0: 0,
        accept_queue_max: 0,
        _pad1: 0,
    };
}

// 8 + 28 + 4 + 16 + 16 + 2 + 2 + 2 + 2 + 4 + 4 = 88, a multiple of the 8-byte alignment.
const _: () = assert!(core::mem::size_of::<DropEvent>() == 88);
