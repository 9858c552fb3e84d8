//! Against the real system (root): listen overflows made in a namespace of the test's
//! own, compared with `ip netns exec NS nstat -asz`.

use std::{path::Path, time::Duration};

use socket2::{Domain, Socket, Type};

use crate::support::{
    netns::Netns,
    require_root,
    sockets::{connect, listen, local},
    tools::Sleeper,
};
use listendrop::inventory::counters::*;
use listendrop::inventory::namespaces::run_in;

#[test]
fn counters_equal_nstat_through_a_thread_and_a_pid() {
    if !require_root("counters_equal_nstat_through_a_thread_and_a_pid") {
        return;
    }
    let ns = Netns::new("inv-cnt");
    let _keep = ns.enter(|| {
        // Backlog 1: the accept queue holds 2, the third SYN overflows it.
        let listener = listen("127.0.0.1:0".parse().unwrap(), 1, None);
        let addr = local(&listener);
        let clients: Vec<_> = (0..2).map(|_| connect(addr)).collect();
        let late = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        late.set_nonblocking(true).unwrap();
        let _ = late.connect(&addr.into());
        std::thread::sleep(Duration::from_millis(200));
        drop(late); // closed before its SYN is retransmitted: no more drops
        (listener, clients)
    });
    let path = format!("/run/netns/{}", ns.name);
    let by_thread = run_in(Path::new(&path), ns.inode as u32, read_current_thread).unwrap();
    let nstat = ns.nstat();
    for (name, value) in by_thread.named() {
        assert_eq!(Some(&value), nstat.get(name), "{name}");
    }
    assert!(by_thread.listen_overflows >= 1, "{by_thread:?}");
    assert!(by_thread.listen_drops >= by_thread.listen_overflows);

    let sleeper = Sleeper::start(&ns, &[]);
    assert_eq!(read_for_pid(sleeper.pid()).unwrap(), by_thread);
}
