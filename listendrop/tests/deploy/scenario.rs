//! The ACK-time accept-queue overflow scenario, with the kernel's count of what it did.

use crate::support::{
    netns::{delta, Netns},
    scenarios::ack_overflow,
};

/// Makes ACK-time overflows on a fresh listener in `ns` (the TCP_DEFER_ACCEPT recipe of
/// `support::scenarios`) and returns the namespace's `TcpExtListenOverflows` delta.
pub fn ack_overflows(ns: &Netns) -> u64 {
    ack_overflows_accounted(ns).0
}

/// [`ack_overflows`], with the kernel's account of the drops (ACK time against SYN time)
/// for a failure message.
pub fn ack_overflows_accounted(ns: &Netns) -> (u64, String) {
    let before = ns.nstat();
    let scenario = ack_overflow(ns, "127.0.0.1:0", None, 2);
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(overflows >= 2, "the scenario made {overflows} overflows");
    (overflows, scenario.kernel_account(&before, &after))
}
