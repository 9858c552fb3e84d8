//! One event (a dropped handshake, a syncookie, a SYN-ACK retransmit), as pushed to the
//! `EVENTS` ring buffer.

use crate::{Addr, ListenerKey};

/// The drop was answered with a reset (`tcp_abort_on_overflow=1`).
pub const FLAG_RESET: u16 = 1 << 0;
/// First drop of this handshake's episode (a new handshake, not a retransmit).
pub const FLAG_NEW_HANDSHAKE: u16 = 1 << 1;
/// A SYN-ACK retransmit for a handshake whose final ACK was dropped: the client believes
/// it is connected while the server never accepted it.
pub const FLAG_CLIENT_BELIEVES_CONNECTED: u16 = 1 << 2;

/// One event: the listener (with the reason), the packet's 4-tuple, and both queues at
/// that moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()` at the drop (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// The listener's socket cookie (`SO_COOKIE`, inet_diag cookie) when the kernel has
    /// generated one, else 0.
    pub cookie: u64,
    /// The listener and the reason; the same key the counters use.
    pub listener: ListenerKey,
    /// Accept queue length (`sk_ack_backlog`) at the event.
    pub accept_queue_len: u32,
    /// Client address.
    pub saddr: Addr,
    /// Server address.
    pub daddr: Addr,
    /// Client port, host byte order.
    pub sport: u16,
    /// Server port, host byte order.
    pub dport: u16,
    /// Address family of the packet (and of `saddr`/`daddr`): an IPv4 client of an IPv6
    /// wildcard listener has [`crate::AF_INET`] here and `AF_INET6` in the listener.
    pub family: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Accept queue limit (`sk_max_ack_backlog`): min(listen() backlog, somaxconn).
    pub accept_queue_max: u32,
    /// SYN queue length (`icsk_accept_queue.qlen`, requests awaiting their ACK).
    pub syn_queue_len: u32,
    /// Explicit padding to the 8-byte alignment.
    pub _pad: u32,
}

impl DropEvent {
    /// An all-zero event, the starting point the eBPF side fills in.
    pub const ZERO: Self = Self {
        ktime_ns: 0,
        cookie: 0,
        listener: ListenerKey::ZERO,
        accept_queue_len: 0,
        saddr: Addr::ZERO,
        daddr: Addr::ZERO,
        sport: 0,
        dport: 0,
        family: 0,
        flags: 0,
        accept_queue_max: 0,
        syn_queue_len: 0,
        _pad: 0,
    };
}

// 8 + 8 + 24 + 4 + 16 + 16 + 2 + 2 + 2 + 2 + 4 + 4 + 4 = 96, a multiple of the 8-byte alignment.
const _: () = assert!(core::mem::size_of::<DropEvent>() == 96);
