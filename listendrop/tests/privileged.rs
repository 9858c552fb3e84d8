//! Privileged end-to-end tests: the real daemon, real sockets in a network namespace of the
//! test's own, and the namespace's kernel counters (nstat) as the oracle.
//!
//! They need root (eBPF, namespaces); as another user they print why and pass, unless
//! LISTENDROP_REQUIRE_PRIVILEGED is set (`cargo xtask test`, CI), where skipping fails.
//! The kernel hooks are host-wide, so every assertion is about this test's namespace only.

mod support;

use std::{
    collections::BTreeSet, net::SocketAddr, process::Command, thread::sleep, time::Duration,
};

use support::{
    daemon::{sum, Daemon},
    netns::{delta, Netns},
    require_root,
    sockets::{connect, listen, local, poke},
};

/// What an ACK-time overflow scenario did.
struct AckOverflow {
    /// The overflowing listener.
    listener: SocketAddr,
    /// A second listener in the same namespace that accepts normally.
    quiet: SocketAddr,
    /// Client ports of the connections whose handshake the kernel dropped.
    victims: BTreeSet<u16>,
    /// The listener's listen() backlog: its accept queue limit.
    backlog: i32,
}

/// Makes ACK-time accept-queue overflows (KERNEL.md's TCP_DEFER_ACCEPT recipe).
///
/// With TCP_DEFER_ACCEPT a bare final ACK leaves the request in the SYN queue; the child
/// is created only when data arrives. The victims complete their handshakes first, then
/// `backlog + 1` fillers connect and send data, one at a time, so that the SYN queue never
/// holds more than `victims < backlog` requests (no syncookies on any kernel) and the accept
/// queue ends at `backlog + 1`: full. The victims' data then overflows, and every client
/// retransmit overflows again, until the listener is closed.
fn ack_overflow(ns: &Netns, victims: usize, retransmit_for: Duration) -> AckOverflow {
    let backlog = i32::try_from(victims).unwrap() + 1;
    ns.enter(|| {
        let listener = listen("127.0.0.1:0".parse().unwrap(), backlog, Some(30));
        let addr = local(&listener);
        let quiet = listen("127.0.0.1:0".parse().unwrap(), 128, None);
        let quiet_addr = local(&quiet);
        let _client = connect(quiet_addr);
        let _served = quiet.accept().unwrap();

        let mut victim_streams: Vec<_> = (0..victims).map(|_| connect(addr)).collect();
        let mut fillers = Vec::new();
        for _ in 0..=backlog {
            let mut filler = connect(addr);
            poke(&mut filler);
            sleep(Duration::from_millis(30));
            fillers.push(filler);
        }
        for victim in &mut victim_streams {
            poke(victim);
        }
        sleep(retransmit_for);
        // Closing the listener ends the episode: later retransmits find no listener.
        drop(listener);
        sleep(Duration::from_millis(100));
        AckOverflow {
            listener: addr,
            quiet: quiet_addr,
            victims: victim_streams
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect(),
            backlog,
        }
    })
}

/// `client=IP:PORT` ports of the drop lines logged for `ns`.
fn logged_client_ports(lines: &[String], ns: &Netns, reason: &str) -> Vec<u16> {
    let netns = format!(" netns={} ", ns.inode);
    let reason = format!(" reason={reason} ");
    lines
        .iter()
        .filter(|l| l.contains(&netns) && l.contains(&reason))
        .map(|l| {
            let client = l.split(" client=").nth(1).expect("client= field");
            let client: SocketAddr = client.split(' ').next().unwrap().parse().unwrap();
            client.port()
        })
        .collect()
}

#[test]
fn ack_overflow_counts_equal_kernel_listen_overflows() {
    if !require_root("ack_overflow_counts_equal_kernel_listen_overflows") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let ns = Netns::new("ackovf");
    let before = ns.nstat();
    let scenario = ack_overflow(&ns, 2, Duration::from_millis(1500));
    let after = ns.nstat();

    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(
        overflows >= 2,
        "the scenario made no overflows: {overflows}"
    );
    // Nothing else dropped in this namespace: both kernel counters agree.
    assert_eq!(delta(&before, &after, "TcpExtListenDrops"), overflows);

    let metrics = daemon.metrics();
    let netns = ns.inode.to_string();
    let port = scenario.listener.port().to_string();
    let counted = sum(
        &metrics,
        "listendrop_drops_total",
        &[
            ("netns", &netns),
            ("listen_port", &port),
            ("listen_addr", "127.0.0.1"),
            ("family", "ipv4"),
            ("reason", "ack_accept_queue_full"),
        ],
    );
    assert_eq!(
        counted, overflows as f64,
        "listendrop vs kernel ListenOverflows"
    );
    // Everything listendrop counted in this namespace is on that one listener.
    assert_eq!(
        sum(&metrics, "listendrop_drops_total", &[("netns", &netns)]),
        counted
    );
    let quiet_port = scenario.quiet.port().to_string();
    assert_eq!(
        sum(
            &metrics,
            "listendrop_drops_total",
            &[("netns", &netns), ("listen_port", &quiet_port)]
        ),
        0.0
    );

    // One log line per dropped packet, each naming a victim; every victim appears.
    let lost = sum(&metrics, "listendrop_events_lost_total", &[]);
    assert_eq!(lost, 0.0, "ring buffer lost events in a quiet test");
    let logged_all = daemon.wait_for_lines(Duration::from_secs(5), |lines| {
        logged_client_ports(lines, &ns, "ack_accept_queue_full").len() as u64 >= overflows
    });
    let ports = logged_client_ports(&daemon.lines(), &ns, "ack_accept_queue_full");
    assert!(logged_all, "{} lines for {overflows} drops", ports.len());
    assert_eq!(ports.len() as u64, overflows);
    let seen: BTreeSet<u16> = ports.into_iter().collect();
    assert_eq!(seen, scenario.victims, "logged clients vs victim sockets");

    // The queue the lines report is the full accept queue: backlog + 1 of backlog.
    let queue = format!(
        " accept_queue={}/{}",
        scenario.backlog + 1,
        scenario.backlog
    );
    assert!(
        daemon
            .lines()
            .iter()
            .filter(|l| l.contains(&format!(" netns={} ", ns.inode)))
            .all(|l| l.ends_with(&queue)),
        "{:#?}",
        daemon.lines()
    );
    assert!(daemon.stop().success());
}

/// Ids of the eBPF programs `pid` holds, from its fds (`anon_inode:bpf-prog`) and their
/// `/proc/PID/fdinfo` (`prog_id:`), as the kernel reports them.
fn programs_of(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map_while(Result::ok)
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target.to_str() != Some("anon_inode:bpf-prog") {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_str().unwrap()
        ))
        .unwrap();
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .expect("prog_id in fdinfo");
        ids.push(id.trim().parse().unwrap());
    }
    ids
}

#[test]
fn sigterm_and_sigint_leave_no_program_behind() {
    if !require_root("sigterm_and_sigint_leave_no_program_behind") {
        return;
    }
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let daemon = Daemon::start(&[]);
        let ids = programs_of(daemon.pid());
        assert!(!ids.is_empty(), "the daemon holds no eBPF program");
        let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        assert!(daemon.wait_for_lines(Duration::from_secs(10), |l| l
            .iter()
            .any(|l| l.contains("detaching and exiting"))));
        let status = daemon.stop_after_signal();
        assert!(status.success(), "{signal}: {status}");
        for id in ids {
            let gone = !Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string()])
                .output()
                .unwrap()
                .status
                .success();
            assert!(gone, "program {id} still loaded after {signal}");
        }
    }
}
