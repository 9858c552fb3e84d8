//! ACK-time accept-queue overflows: the client's final ACK (or first data) arrives while
//! the accept queue is full.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use crate::support::{
    daemon::{sum, Daemon},
    expect::{self, counted},
    netns::{delta, Netns},
    raw, require_root,
    scenarios::{ack_overflow, AckOverflow},
    sockets::{listen, local},
};

/// One log line per dropped packet, each naming a victim and the listener with its full
/// queue; every victim appears, each once as a new handshake.
fn logged_once_per_drop(
    daemon: &Daemon,
    ns: &Netns,
    scenario: &AckOverflow,
    listen_addr: &str,
    overflows: u64,
) {
    let metrics = daemon.metrics();
    let reason = "ack_accept_queue_full";
    // One log line per dropped packet, each naming a victim; every victim appears.
    assert_eq!(sum(&metrics, "listendrop_events_lost_total", &[]), 0.0);
    let complete = daemon.wait_for_lines(Duration::from_secs(10), |_| {
        expect::lines(daemon, ns, reason).len() as u64 >= overflows
    });
    let lines = expect::lines(daemon, ns, reason);
    assert!(complete, "{} lines for {overflows} drops", lines.len());
    assert_eq!(lines.len() as u64, overflows);
    let logged: BTreeSet<u16> = lines.iter().map(|l| expect::client_port(l)).collect();
    assert_eq!(logged, scenario.victims, "logged clients vs victim sockets");
    let queue = format!("{}/{}", scenario.backlog + 1, scenario.backlog);
    for line in &lines {
        assert_eq!(expect::field(line, "accept_queue"), queue, "{line}");
        assert_eq!(
            expect::field(line, "listener"),
            format!(
                "{}",
                SocketAddr::new(listen_addr.parse().unwrap(), scenario.listener.port())
            )
        );
    }
    let new: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" new_handshake=yes"))
        .collect();
    assert_eq!(
        new.len(),
        scenario.victims.len(),
        "one new handshake per victim"
    );
}

/// The checks every ACK-overflow scenario shares; returns the ListenOverflows delta.
fn check_ack_overflow(
    daemon: &Daemon,
    ns: &Netns,
    scenario: &AckOverflow,
    family: &str,
    listen_addr: &str,
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> u64 {
    let overflows = delta(before, after, "TcpExtListenOverflows");
    assert!(
        overflows >= scenario.victims.len() as u64,
        "the scenario made {overflows} overflows"
    );
    // Nothing else dropped in this namespace: both kernel counters agree.
    assert_eq!(delta(before, after, "TcpExtListenDrops"), overflows);

    let metrics = daemon.metrics();
    let port = scenario.listener.port().to_string();
    let listener = [
        ("listen_port", port.as_str()),
        ("listen_addr", listen_addr),
        ("family", family),
    ];
    let reason = "ack_accept_queue_full";
    // On a difference, whether the kernel dropped packets at SYN time too.
    let against = format!(
        "ListenOverflows ({})",
        scenario.kernel_account(before, after)
    );
    assert!(counted(
        &metrics,
        ns,
        "listendrop_drops_total",
        reason,
        &listener,
        overflows,
        &against
    ));
    // Every victim is one dropped handshake, however many of its packets were dropped.
    counted(
        &metrics,
        ns,
        "listendrop_dropped_handshakes_total",
        reason,
        &listener,
        scenario.victims.len() as u64,
        "victim connections",
    );
    let netns = ns.inode.to_string();
    let ours = sum(&metrics, "listendrop_drops_total", &[("netns", &netns)]) as u64;
    // What the kernel handed to eBPF programs: every overflow, unless the independent
    // witness shows it withheld some (then `counted` above printed why).
    let delivered = crate::support::witness::withheld(
        ns.inode,
        Some(scenario.listener.port()),
        ours,
        overflows,
    )
    .map_or(overflows, |_| ours);
    // The witness itself counts what the kernel delivered (on hosts that have one), less
    // the runs of its program the kernel skipped and counted.
    if let Some(counts) = crate::support::witness::counts() {
        let seen = counts
            .get(&(ns.inode, scenario.listener.port()))
            .copied()
            .unwrap_or(0);
        let missed = crate::support::witness::missed().unwrap_or(0);
        assert!(
            seen <= delivered && delivered - seen <= missed,
            "bpftrace's witness saw {seen} of the {delivered} frees the kernel delivered, \
             with {missed} runs of its program skipped"
        );
    }
    // Everything listendrop counted in this namespace is on that one listener.
    assert_eq!(ours, delivered);
    let quiet_port = scenario.quiet.port().to_string();
    assert_eq!(
        sum(
            &metrics,
            "listendrop_drops_total",
            &[("netns", &netns), ("listen_port", &quiet_port)]
        ),
        0.0,
        "the listener that accepts shows no drops"
    );

    logged_once_per_drop(daemon, ns, scenario, listen_addr, delivered);
    overflows
}

/// The ACK overflow scenario, its clients held back until the inventory has seen the
/// listener and its owner (this process), so that every drop line can name it.
fn overflow_once_the_owner_is_known(daemon: &Daemon, ns: &Netns) -> AckOverflow {
    let netns = ns.inode.to_string();
    let pid = std::process::id();
    let (listening, listener) = std::sync::mpsc::channel();
    let (go, ready) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            crate::support::scenarios::ack_overflow_after(ns, "127.0.0.1:0", None, 2, move |addr| {
                listening.send(addr).unwrap();
                ready.recv().unwrap();
            })
        });
        let port = listener.recv().unwrap().port().to_string();
        let owner = pid.to_string();
        let seen = daemon.wait_for_metric(Duration::from_secs(20), |m| {
            sum(
                m,
                "listendrop_listener_info",
                &[("netns", &netns), ("listen_port", &port), ("pid", &owner)],
            ) > 0.0
        });
        go.send(()).unwrap();
        let scenario = run.join().unwrap();
        assert!(seen, "the inventory never saw the listener and its owner");
        scenario
    })
}

/// Every drop line names the owner (this process), and the log says when the listener
/// starts dropping, with the diagnosis.
fn owner_and_diagnosis_logged(daemon: &Daemon, ns: &Netns, scenario: &AckOverflow) {
    let pid = std::process::id();
    let netns = ns.inode.to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let owner = format!(" owner={pid}/{} ", comm.trim());
    let lines = expect::lines(daemon, ns, "ack_accept_queue_full");
    assert!(
        lines.iter().all(|l| l.contains(&owner)),
        "{owner}: {lines:#?}"
    );
    let all = daemon.lines();
    let listener = format!("listener {} ", scenario.listener);
    let started = format!("(netns {netns}, ");
    assert!(
        all.iter().any(|l| l.contains(&listener)
            && l.contains(&started)
            && l.contains("started dropping handshakes (ack_accept_queue_full)")),
        "{all:#?}"
    );
    let diagnosed = format!("listener {}: final ACKs ignored", scenario.listener);
    assert!(all.iter().any(|l| l.contains(&diagnosed)), "{all:#?}");
}

/// The SYN-ACK retransmits (`retrans`: the kernel's TCPSynRetrans; only the listener
/// retransmits SYN-ACKs here, no client SYN was lost) are counted, and each answers a
/// victim whose ACK was dropped: logged as such.
fn synack_retransmits_answer_victims(
    daemon: &Daemon,
    ns: &Netns,
    scenario: &AckOverflow,
    retrans: u64,
) {
    let port = scenario.listener.port().to_string();
    assert!(retrans >= 1, "no SYN-ACK was retransmitted");
    if counted(
        &daemon.metrics(),
        ns,
        "listendrop_synack_retransmits_total",
        "synack_retransmit",
        &[("listen_port", &port)],
        retrans,
        "TCPSynRetrans",
    ) {
        let believers = expect::lines(daemon, ns, "synack_retransmit");
        assert!(!believers.is_empty());
        for line in &believers {
            assert!(line.contains("client believes it is connected"), "{line}");
            assert!(
                scenario.victims.contains(&expect::client_port(line)),
                "{line}"
            );
        }
    }
}

#[test]
fn ack_overflow_ipv4_matches_kernel_counters() {
    if !require_root("ack_overflow_ipv4_matches_kernel_counters") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let ns = Netns::new("ack4");
    // Once the daemon knows the namespace (its sysctls), the first drop is diagnosed.
    let netns = ns.inode.to_string();
    assert!(
        daemon.wait_for_metric(Duration::from_secs(20), |m| {
            sum(m, "listendrop_sysctl", &[("netns", &netns)]) > 0.0
        }),
        "the inventory never saw namespace {netns}"
    );
    let before = ns.nstat();
    let scenario = overflow_once_the_owner_is_known(&daemon, &ns);
    let after = ns.nstat();
    check_ack_overflow(
        &daemon,
        &ns,
        &scenario,
        "ipv4",
        "127.0.0.1",
        &before,
        &after,
    );

    owner_and_diagnosis_logged(&daemon, &ns, &scenario);
    synack_retransmits_answer_victims(
        &daemon,
        &ns,
        &scenario,
        delta(&before, &after, "TcpExtTCPSynRetrans"),
    );
    assert!(
        scenario.victim_reads.iter().all(|r| r.is_err()),
        "victims saw nothing: {:?}",
        scenario.victim_reads
    );
    assert!(daemon.stop().success());
}

#[test]
fn ack_overflow_with_abort_on_overflow_resets_clients() {
    if !require_root("ack_overflow_with_abort_on_overflow_resets_clients") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let ns = Netns::new("ackrst");
    ns.sysctl("net.ipv4.tcp_abort_on_overflow", "1");
    let before = ns.nstat();
    let scenario = ack_overflow(&ns, "127.0.0.1:0", None, 2);
    let after = ns.nstat();

    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    let resets = delta(&before, &after, "TcpExtEmbryonicRsts");
    assert_eq!(
        resets,
        scenario.victims.len() as u64,
        "each victim reset once"
    );
    assert_eq!(overflows, resets, "the reset ends each victim's episode");
    for read in &scenario.victim_reads {
        let err = read.as_ref().expect_err("victim was not reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
    let metrics = daemon.metrics();
    let port = scenario.listener.port().to_string();
    let listener = [("listen_port", port.as_str())];
    assert!(counted(
        &metrics,
        &ns,
        "listendrop_drops_total",
        "ack_accept_queue_full",
        &listener,
        overflows,
        "ListenOverflows"
    ));
    counted(
        &metrics,
        &ns,
        "listendrop_overflow_resets_total",
        "overflow_reset",
        &listener,
        resets,
        "EmbryonicRsts",
    );
    daemon.wait_for_lines(Duration::from_secs(10), |_| {
        expect::lines(&daemon, &ns, "ack_accept_queue_full").len() as u64 >= overflows
    });
    let lines = expect::lines(&daemon, &ns, "ack_accept_queue_full");
    assert_eq!(lines.len() as u64, overflows);
    assert!(
        lines.iter().all(|l| l.ends_with(" reset=sent")),
        "{lines:#?}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn ack_overflow_ipv6_and_ipv4_mapped_count_once() {
    if !require_root("ack_overflow_ipv6_and_ipv4_mapped_count_once") {
        return;
    }
    let daemon = Daemon::start(&[]);
    // A native IPv6 listener on [::1].
    let ns = Netns::new("ack6");
    let before = ns.nstat();
    let scenario = ack_overflow(&ns, "[::1]:0", None, 2);
    let after = ns.nstat();
    check_ack_overflow(&daemon, &ns, &scenario, "ipv6", "::1", &before, &after);

    // IPv4 clients of an IPv6 wildcard listener: tcp_v6_syn_recv_sock calls
    // tcp_v4_syn_recv_sock; the drop must be counted once, on the [::] listener.
    let ns = Netns::new("ackmap");
    let before = ns.nstat();
    let scenario = ack_overflow(&ns, "[::]:0", Some("127.0.0.1"), 2);
    let after = ns.nstat();
    check_ack_overflow(&daemon, &ns, &scenario, "ipv6", "::", &before, &after);
    assert!(daemon.stop().success());
}

#[test]
fn events_are_rate_limited_per_listener_counts_are_not() {
    if !require_root("events_are_rate_limited_per_listener_counts_are_not") {
        return;
    }
    // One event per listener and second: the scenario's drops (a dozen in ~2.5 s) mostly
    // go unlogged, yet every one is counted, and the losses are counted too.
    let daemon = Daemon::start(&["--events-per-listener-per-sec", "1"]);
    let ns = Netns::new("ratelim");
    let before = ns.nstat();
    let scenario = ack_overflow(&ns, "127.0.0.1:0", None, 2);
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(
        overflows >= 6,
        "the scenario made only {overflows} overflows"
    );
    let port = scenario.listener.port().to_string();
    let reason = "ack_accept_queue_full";
    // Events in flight reach the log within a moment: wait until the count settles.
    let mut logged = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = expect::lines(&daemon, &ns, "ack_accept_queue_full").len();
        if now == logged && now > 0 {
            break;
        }
        logged = now;
    }
    let metrics = daemon.metrics();
    let covered = counted(
        &metrics,
        &ns,
        "listendrop_drops_total",
        reason,
        &[("listen_port", &port)],
        overflows,
        "ListenOverflows",
    );
    assert!(
        covered,
        "ack_accept_queue_full is observable on every kernel here"
    );
    let logged = expect::lines(&daemon, &ns, reason).len() as u64;
    assert!(logged >= 1, "the first drop of a window is logged");
    assert!(
        logged < overflows,
        "{logged} of {overflows} drops logged despite the limit"
    );
    // This daemon sees other tests' listeners too: its losses are at least ours.
    let limited = sum(
        &metrics,
        "listendrop_events_lost_total",
        &[("cause", "rate_limited")],
    );
    assert!(
        limited >= (overflows - logged) as f64,
        "{limited} events counted as rate-limited, {} of ours were",
        overflows - logged
    );
    assert!(daemon.stop().success());
}

/// The final ACK of a handshake whose child cannot be routed: `tcp_v4_syn_recv_sock`
/// creates the child, finds no route back to the client and fails (ListenDrops only, no
/// ListenOverflows). On 6.15+ the kernel still frees that ACK as a "listen overflow": every
/// kind of hook must count it as `other`, never as `ack_accept_queue_full`.
#[test]
fn ack_without_a_route_is_other_on_every_kind() {
    if !require_root("ack_without_a_route_is_other_on_every_kind") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let ns = Netns::new("acknoroute");
    ns.veth("198.18.7.1");
    // The client is a neighbour on veth0 that never answers: the SYN-ACK leaves at once.
    ns.neighbour("198.18.7.2", "02:00:00:00:07:02");
    let before = ns.nstat();
    let (server, client) = ns.enter(|| {
        let _exact = crate::support::daemon::counting_exactly();
        let listener = listen("198.18.7.1:0".parse().unwrap(), 16, None);
        let SocketAddr::V4(server) = local(&listener) else {
            unreachable!()
        };
        let client = SocketAddrV4::new([198, 18, 7, 2].into(), 40700);
        let sniffer = raw::frame_sniffer();
        let sender = raw::sender();
        let isn = 9_000;
        raw::syn(&sender, client, server, isn);
        let server_isn = raw::await_synack(&sniffer, server, client);
        // Now the way back is gone: the child the ACK creates cannot be routed.
        ns.route(&["blackhole", "198.18.7.2/32"]);
        raw::ack(&sender, client, server, isn + 1, server_isn.wrapping_add(1));
        std::thread::sleep(Duration::from_millis(200));
        drop(listener);
        (server, client)
    });
    let after = ns.nstat();
    assert_eq!(delta(&before, &after, "TcpExtListenDrops"), 1, "one drop");
    assert_eq!(
        delta(&before, &after, "TcpExtListenOverflows"),
        0,
        "no overflow"
    );
    assert!(
        delta(&before, &after, "IpOutNoRoutes") >= 1,
        "no route back"
    );
    let metrics = daemon.metrics();
    let netns = ns.inode.to_string();
    let port = server.port().to_string();
    let listener = [("netns", netns.as_str()), ("listen_port", port.as_str())];
    let with = |reason: &str| {
        let mut l = listener.to_vec();
        l.push(("reason", reason));
        sum(&metrics, "listendrop_drops_total", &l)
    };
    // Whatever the kind: every hook that sees this drop calls it `other` (the freed-ACK
    // tracepoints see it although they do not see all of `other`, whose coverage stays 0).
    assert_eq!(with("other"), 1.0, "counted as other");
    assert_eq!(with("ack_accept_queue_full"), 0.0, "not an overflow");
    assert_eq!(sum(&metrics, "listendrop_drops_total", &listener), 1.0);
    let lines = {
        daemon.wait_for_lines(Duration::from_secs(10), |_| {
            !expect::lines(&daemon, &ns, "other").is_empty()
        });
        expect::lines(&daemon, &ns, "other")
    };
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(expect::field(&lines[0], "client"), client.to_string());
    assert!(daemon.stop().success());
}
