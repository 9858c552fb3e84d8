//! The ACK-time accept-queue overflow of `tests/privileged/ack.rs` (TCP_DEFER_ACCEPT
//! recipe), in a namespace of the test's own, with the kernel's count of what it did.

use std::{thread::sleep, time::Duration};

use crate::support::{
    netns::{delta, Netns},
    sockets::{connect, listen, local, poke},
};

/// Makes ACK-time overflows on a fresh listener in `ns` and returns the namespace's
/// `TcpExtListenOverflows` delta.
///
/// listen(backlog=3) with TCP_DEFER_ACCEPT=1: 2 victims complete their handshakes (their
/// requests stay in the SYN queue until data arrives), 4 fillers connect and send one
/// byte each, 30 ms apart, filling the accept queue to 4 of 3; the victims' bytes then
/// overflow it, and so does every retransmit for 2.5 s, until the listener is closed.
pub fn ack_overflows(ns: &Netns) -> u64 {
    let before = ns.nstat();
    ns.enter(|| {
        let backlog = 3;
        let listener = listen("127.0.0.1:0".parse().unwrap(), backlog, Some(1));
        let addr = local(&listener);
        let mut victims: Vec<_> = (0..2).map(|_| connect(addr)).collect();
        let mut fillers = Vec::new();
        for _ in 0..=backlog {
            let mut filler = connect(addr);
            poke(&mut filler);
            sleep(Duration::from_millis(30));
            fillers.push(filler);
        }
        for victim in &mut victims {
            poke(victim);
        }
        sleep(Duration::from_millis(2500));
        // Closing the listener ends the episode: later retransmits find no listener.
        drop(listener);
        sleep(Duration::from_millis(100));
    });
    let overflows = delta(&before, &ns.nstat(), "TcpExtListenOverflows");
    assert!(overflows >= 2, "the scenario made {overflows} overflows");
    overflows
}
