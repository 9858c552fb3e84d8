//! SYN-time drops (`tcp_conn_request`), syncookies, and the syncookie ACK path. These need
//! kprobes or fentry: on a kernel without them the tests check that listendrop says so
//! (`listendrop_coverage` 0, no series) while the kernel's counters did move.

use std::{
    net::{SocketAddr, SocketAddrV4},
    thread::sleep,
    time::Duration,
};

use crate::support::{
    daemon::{sum, Daemon},
    expect::{self, counted},
    netns::{delta, Netns},
    raw, require_root,
    sockets::{connect, listen, local},
};

/// A connect that does not wait for the handshake.
fn connect_nonblocking(addr: SocketAddr) -> socket2::Socket {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.set_nonblocking(true).unwrap();
    let _ = s.connect(&addr.into());
    s
}

#[test]
fn syn_accept_queue_full_matches_listen_overflows() {
    if !require_root("syn_accept_queue_full_matches_listen_overflows") {
        return;
    }
    syn_accept_queue_full("127.0.0.1:0", "ipv4");
}

#[test]
fn syn_accept_queue_full_ipv6_matches_listen_overflows() {
    if !require_root("syn_accept_queue_full_ipv6_matches_listen_overflows") {
        return;
    }
    syn_accept_queue_full("[::1]:0", "ipv6");
}

fn syn_accept_queue_full(bind: &str, family: &str) {
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let ns = Netns::new("synaq");
    let before = ns.nstat();
    let (port, victim_port) = ns.enter(|| {
        // listen(1) and never accept: two connections fill the accept queue (it holds
        // backlog + 1), the third client's SYN and its retransmits (1 s, 3 s) are dropped.
        let listener = listen(bind.parse().unwrap(), 1, None);
        let addr = local(&listener);
        let _a = connect(addr);
        let _b = connect(addr);
        sleep(Duration::from_millis(50));
        let victim = connect_nonblocking(addr);
        let victim_port = victim.local_addr().unwrap().as_socket().unwrap().port();
        sleep(Duration::from_millis(3500));
        drop(victim);
        drop(listener);
        (addr.port(), victim_port)
    });
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(overflows >= 2, "the scenario made {overflows} overflows");
    assert_eq!(delta(&before, &after, "TcpExtListenDrops"), overflows);

    let metrics = daemon.metrics();
    let port = port.to_string();
    let listener = [("listen_port", port.as_str()), ("family", family)];
    let reason = "syn_accept_queue_full";
    if counted(
        &metrics,
        &ns,
        "listendrop_drops_total",
        reason,
        &listener,
        overflows,
        "ListenOverflows",
    ) {
        counted(
            &metrics,
            &ns,
            "listendrop_dropped_handshakes_total",
            reason,
            &listener,
            1,
            "victims",
        );
        daemon.wait_for_lines(Duration::from_secs(10), |_| {
            expect::lines(&daemon, &ns, reason).len() as u64 >= overflows
        });
        let lines = expect::lines(&daemon, &ns, reason);
        assert_eq!(lines.len() as u64, overflows);
        assert!(
            lines.iter().all(|l| expect::client_port(l) == victim_port),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .all(|l| expect::field(l, "accept_queue") == "2/1"),
            "{lines:#?}"
        );
    }
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}

/// The server side of a SYN flood from addresses that never answer: a veth in the
/// namespace, the listener on 198.18.0.1 (RFC 2544 benchmark range, inside the test's own
/// namespace only), raw SYNs from other addresses of that /24. Their SYN-ACKs wait for
/// ARP answers that never come, so every request stays in the SYN queue.
struct Flood {
    ns: Netns,
    listener: SocketAddrV4,
    sources: Vec<SocketAddrV4>,
}

const SERVER: [u8; 4] = [198, 18, 0, 1];

impl Flood {
    fn new(tag: &str, sysctls: &[(&str, &str)]) -> Self {
        let ns = Netns::new(tag);
        ns.veth("198.18.0.1");
        for (key, value) in sysctls {
            ns.sysctl(key, value);
        }
        Self {
            ns,
            listener: SocketAddrV4::new(SERVER.into(), 0),
            sources: Vec::new(),
        }
    }

    /// Listens with `backlog` and sends `count` SYNs from distinct unanswered sources
    /// (from `subnet`, a /24 prefix), then waits a moment.
    fn run(&mut self, backlog: i32, count: u8, subnet: [u8; 3]) {
        let (listener, sources) = self.ns.enter(|| {
            let socket = listen(
                SocketAddr::V4(SocketAddrV4::new(SERVER.into(), 0)),
                backlog,
                None,
            );
            let SocketAddr::V4(listener) = local(&socket) else {
                unreachable!()
            };
            let sender = raw::sender();
            let sources: Vec<_> = (0..count)
                .map(|i| {
                    let src = SocketAddrV4::new(
                        [subnet[0], subnet[1], subnet[2], 10 + i].into(),
                        40000 + u16::from(i),
                    );
                    raw::syn(&sender, src, listener, 1000 + u32::from(i));
                    sleep(Duration::from_millis(5));
                    src
                })
                .collect();
            sleep(Duration::from_millis(300));
            drop(socket);
            (listener, sources)
        });
        self.listener = listener;
        self.sources = sources;
    }
}

/// Every SYN of a flood is its own handshake (one per source): `dropped_handshakes_total`
/// equals the packets, and the log has one line per drop, each naming one of the flood's
/// sources.
fn check_flood_handshakes_and_log(
    daemon: &Daemon,
    flood: &Flood,
    metrics: &[prometheus_parse::Sample],
    reason: &str,
    drops: u64,
) {
    let port = flood.listener.port().to_string();
    counted(
        metrics,
        &flood.ns,
        "listendrop_dropped_handshakes_total",
        reason,
        &[("listen_port", &port)],
        drops,
        "dropped SYNs, one per source",
    );
    daemon.wait_for_lines(Duration::from_secs(10), |_| {
        expect::lines(daemon, &flood.ns, reason).len() as u64 >= drops
    });
    let lines = expect::lines(daemon, &flood.ns, reason);
    assert_eq!(lines.len() as u64, drops, "{lines:#?}");
    for line in &lines {
        let client: SocketAddr = expect::field(line, "client").parse().unwrap();
        assert!(
            flood.sources.iter().any(|s| SocketAddr::V4(*s) == client),
            "{line}"
        );
        assert_eq!(
            expect::field(line, "server"),
            SocketAddr::V4(flood.listener).to_string(),
            "{line}"
        );
    }
}

#[test]
fn syn_queue_full_without_syncookies_matches_reqqfulldrop() {
    if !require_root("syn_queue_full_without_syncookies_matches_reqqfulldrop") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let mut flood = Flood::new("synq", &[("net.ipv4.tcp_syncookies", "0")]);
    let before = flood.ns.nstat();
    flood.run(4, 12, [198, 18, 0]);
    let after = flood.ns.nstat();
    let full = delta(&before, &after, "TcpExtTCPReqQFullDrop");
    assert!(full >= 6, "the SYN queue of 4 did not overflow: {full}");
    assert_eq!(delta(&before, &after, "TcpExtListenDrops"), full);
    let metrics = daemon.metrics();
    let port = flood.listener.port().to_string();
    let listener = [
        ("listen_port", port.as_str()),
        ("listen_addr", "198.18.0.1"),
    ];
    let reason = "syn_queue_full";
    if counted(
        &metrics,
        &flood.ns,
        "listendrop_drops_total",
        reason,
        &listener,
        full,
        "TCPReqQFullDrop",
    ) {
        check_flood_handshakes_and_log(&daemon, &flood, &metrics, reason, full);
    }
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &flood.ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}

#[test]
fn syncookies_sent_match_kernel_counter() {
    if !require_root("syncookies_sent_match_kernel_counter") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let mut flood = Flood::new("cookie", &[("net.ipv4.tcp_syncookies", "1")]);
    let before = flood.ns.nstat();
    flood.run(4, 12, [198, 18, 0]);
    let after = flood.ns.nstat();
    let sent = delta(&before, &after, "TcpExtSyncookiesSent");
    assert!(sent >= 6, "no syncookies were sent: {sent}");
    assert_eq!(
        delta(&before, &after, "TcpExtListenDrops"),
        0,
        "cookies are not drops"
    );
    let metrics = daemon.metrics();
    let port = flood.listener.port().to_string();
    counted(
        &metrics,
        &flood.ns,
        "listendrop_syncookies_sent_total",
        "syncookie_sent",
        &[("listen_port", &port)],
        sent,
        "SyncookiesSent",
    );
    let netns = flood.ns.inode.to_string();
    assert_eq!(
        sum(&metrics, "listendrop_drops_total", &[("netns", &netns)]),
        0.0
    );
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &flood.ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}

#[test]
fn syn_backlog_pressure_matches_listen_drops() {
    if !require_root("syn_backlog_pressure_matches_listen_drops") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    // Cookies off and tcp_max_syn_backlog 8: once 7 requests wait (8 - 7 < 8/4), SYNs from
    // peers the kernel has never talked to are dropped, long before the listen(64) queue
    // is full.
    let mut flood = Flood::new(
        "press",
        &[
            ("net.ipv4.tcp_syncookies", "0"),
            ("net.ipv4.tcp_max_syn_backlog", "8"),
        ],
    );
    let before = flood.ns.nstat();
    flood.run(64, 16, [198, 18, 0]);
    let after = flood.ns.nstat();
    let drops = delta(&before, &after, "TcpExtListenDrops");
    assert!(drops >= 6, "no backlog-pressure drops: {drops}");
    assert_eq!(delta(&before, &after, "TcpExtListenOverflows"), 0);
    assert_eq!(delta(&before, &after, "TcpExtTCPReqQFullDrop"), 0);
    let metrics = daemon.metrics();
    let port = flood.listener.port().to_string();
    if counted(
        &metrics,
        &flood.ns,
        "listendrop_drops_total",
        "syn_backlog_pressure",
        &[("listen_port", &port)],
        drops,
        "ListenDrops",
    ) {
        check_flood_handshakes_and_log(&daemon, &flood, &metrics, "syn_backlog_pressure", drops);
    }
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &flood.ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}

#[test]
fn route_failure_is_other() {
    if !require_root("route_failure_is_other") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    // SYNs from a blackholed subnet: the SYN-ACK has no route, tcp_conn_request drops the
    // SYN (ListenDrops only).
    let mut flood = Flood::new("route", &[]);
    flood.ns.route(&["blackhole", "198.18.1.0/24"]);
    let before = flood.ns.nstat();
    flood.run(64, 3, [198, 18, 1]);
    let after = flood.ns.nstat();
    let drops = delta(&before, &after, "TcpExtListenDrops");
    assert_eq!(drops, 3, "every SYN from the blackholed subnet is dropped");
    let metrics = daemon.metrics();
    let port = flood.listener.port().to_string();
    if counted(
        &metrics,
        &flood.ns,
        "listendrop_drops_total",
        "other",
        &[("listen_port", &port)],
        drops,
        "ListenDrops",
    ) {
        check_flood_handshakes_and_log(&daemon, &flood, &metrics, "other", drops);
    }
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &flood.ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}

#[test]
fn cookie_ack_into_full_accept_queue_matches_listen_overflows() {
    if !require_root("cookie_ack_into_full_accept_queue_matches_listen_overflows") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let ns = Netns::new("ckack");
    // syncookies=2: every SYN is answered with a cookie and no request is kept.
    ns.sysctl("net.ipv4.tcp_syncookies", "2");
    let before = ns.nstat();
    let (port, client) = ns.enter(|| {
        let listener = listen("127.0.0.1:0".parse().unwrap(), 1, None);
        let SocketAddr::V4(server) = local(&listener) else {
            unreachable!()
        };
        // Take a cookie while the queue has room: a raw SYN from a port nobody owns (the
        // kernel's RST to the SYN-ACK meets a listener, which ignores it).
        let client = SocketAddrV4::new([127, 0, 0, 1].into(), 47123);
        let sniffer = raw::tcp_sniffer();
        let sender = raw::sender();
        let isn = 77_000;
        raw::syn(&sender, client, server, isn);
        let cookie = raw::await_synack(&sniffer, server, client);
        // Fill the accept queue (2 children for listen(1)), then present the cookie.
        let _a = connect(SocketAddr::V4(server));
        let _b = connect(SocketAddr::V4(server));
        sleep(Duration::from_millis(50));
        raw::ack(&sender, client, server, isn + 1, cookie.wrapping_add(1));
        sleep(Duration::from_millis(200));
        drop(sniffer);
        drop(listener);
        (server.port(), client)
    });
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert_eq!(overflows, 1, "the cookie ACK overflowed once");
    assert!(delta(&before, &after, "TcpExtSyncookiesRecv") >= 1);
    let metrics = daemon.metrics();
    let port = port.to_string();
    let reason = "cookie_ack_accept_queue_full";
    if counted(
        &metrics,
        &ns,
        "listendrop_drops_total",
        reason,
        &[("listen_port", &port)],
        overflows,
        "ListenOverflows",
    ) {
        daemon.wait_for_lines(Duration::from_secs(10), |_| {
            !expect::lines(&daemon, &ns, reason).is_empty()
        });
        let lines = expect::lines(&daemon, &ns, reason);
        assert_eq!(lines.len(), 1);
        assert_eq!(expect::client_port(&lines[0]), client.port());
    }
    // Every drop of the namespace is attributed, or said to be unattributed.
    expect::reconciled(&daemon, &ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}
