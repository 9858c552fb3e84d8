//! Against the real system (root): listeners in a namespace of the test's own, compared
//! with what `ip netns exec NS ss` prints there.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use crate::support::{
    netns::Netns,
    require_root,
    sockets::{connect, listen, local},
    tools::{ss_listeners, ss_syn_recv, wait_until, SsListener},
};
use listendrop::inventory::namespaces::run_in;
use listendrop::inventory::sockdiag::*;

/// Our dump and ss's, taken until ss shows the same thing before and after ours.
fn dump_and_ss(ns: &Netns) -> (Sockets, Vec<SsListener>) {
    let path = format!("/run/netns/{}", ns.name);
    for _ in 0..5 {
        let before = ss_listeners(ns);
        let ours = run_in(Path::new(&path), ns.inode as u32, dump).unwrap();
        if ss_listeners(ns) == before {
            return (ours, before);
        }
    }
    panic!("the listeners of {} keep changing", ns.name);
}

#[test]
fn dump_matches_ss() {
    if !require_root("dump_matches_ss") {
        return;
    }
    let ns = Netns::new("inv-diag");
    let (full, deferred, dual, _clients) = ns.enter(|| {
        // Backlog 2: three connections fill the accept queue (it holds limit + 1);
        // a fourth SYN finds it full and is dropped (sk_drops).
        let full = listen("127.0.0.1:0".parse().unwrap(), 2, None);
        let addr = local(&full);
        let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        let late = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        late.set_nonblocking(true).unwrap();
        let _ = late.connect(&addr.into());
        std::thread::sleep(Duration::from_millis(200));
        drop(late); // closed before its SYN is retransmitted: no more drops
                    // TCP_DEFER_ACCEPT: handshakes without data stay SYN_RECV request sockets.
        let deferred = listen("[::1]:0".parse().unwrap(), 7, Some(30));
        let daddr = local(&deferred);
        clients.extend((0..2).map(|_| connect(daddr)));
        // A dual-stack wildcard listener: IPv4 requests show as IPv4-mapped IPv6.
        let dual = listen("[::]:0".parse().unwrap(), 9, Some(30));
        let port = local(&dual).port();
        clients.push(connect(SocketAddr::from(([127, 0, 0, 1], port))));
        clients.push(connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))));
        (full, deferred, dual, clients)
    });
    let (fport, dport) = (local(&full).port(), local(&deferred).port());
    let duport = local(&dual).port();
    wait_until("SYN_RECV entries", || {
        ss_syn_recv(&ns, dport) == 2 && ss_syn_recv(&ns, duport) == 2
    });

    let (ours, ss) = dump_and_ss(&ns);
    assert_eq!(ours.listeners.len(), ss.len(), "{ours:?}\n{ss:?}");
    for theirs in &ss {
        let l = ours
            .listeners
            .iter()
            .find(|l| l.inode == theirs.inode)
            .unwrap_or_else(|| panic!("ss lists {theirs:?}, we do not: {ours:?}"));
        assert_eq!(l.accept_queue_len, theirs.recv_q, "Recv-Q of {theirs:?}");
        assert_eq!(l.accept_queue_limit, theirs.send_q, "Send-Q of {theirs:?}");
        assert_eq!(l.cookie, theirs.cookie, "sk: of {theirs:?}");
        assert_eq!(l.sk_drops, Some(theirs.drops), "skmem d of {theirs:?}");
        assert!(
            theirs.local.ends_with(&format!(":{}", l.port)),
            "{theirs:?}"
        );
        assert_eq!(l.syn_recv, ss_syn_recv(&ns, l.port), "{l:?}");
    }
    let f = ours.listeners.iter().find(|l| l.port == fport).unwrap();
    assert_eq!(f.family, Family::Ipv4);
    assert_eq!(f.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!((f.accept_queue_len, f.accept_queue_limit), (3, 2));
    assert!(f.sk_drops.unwrap() >= 1, "{f:?}");
    let d = ours.listeners.iter().find(|l| l.port == dport).unwrap();
    assert_eq!(d.family, Family::Ipv6);
    assert_eq!((d.syn_recv, d.syn_recv_shared_by), (2, 1));
    assert_eq!((d.accept_queue_len, d.accept_queue_limit), (0, 7));
    let du = ours.listeners.iter().find(|l| l.port == duport).unwrap();
    assert_eq!((du.family, du.v6only), (Family::Ipv6, false));
    assert_eq!(du.syn_recv, 2, "one IPv4 and one IPv6 request");
    assert_eq!(ours.unattributed_syn_recv, 0);
}
