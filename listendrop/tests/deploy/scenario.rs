//! The ACK-time accept-queue overflow scenario, with the kernel's count of what it did.

use crate::support::{
    netns::{delta, Netns},
    scenarios::ack_overflow,
};

/// Makes ACK-time overflows on a fresh listener in `ns` (the TCP_DEFER_ACCEPT recipe of
/// `support::scenarios`) and returns the namespace's `TcpExtListenOverflows` delta.
pub fn ack_overflows(ns: &Netns) -> u64 {
    let before = ns.nstat();
    ack_overflow(ns, "127.0.0.1:0", None, 2);
    let overflows = delta(&before, &ns.nstat(), "TcpExtListenOverflows");
    assert!(overflows >= 2, "the scenario made {overflows} overflows");
    overflows
}
