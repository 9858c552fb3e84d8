//! SO_REUSEPORT groups: each member is its own socket with its own accept queue, and one
//! slow worker overflows its member while the others idle. The gauges must show the
//! saturated member (not a sum that hides it), the group must be one listener with one
//! owner series, and the counts must still equal the kernel's.

use std::{thread::sleep, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::support::{
    daemon::{status_json, sum, Daemon},
    expect,
    netns::{delta, run, Netns},
    require_root,
    sockets::{listen_reuseport, local, serve_in_child, Holder},
};

/// Members of the group, with (Recv-Q, Send-Q), as `ss -ltn` lists them in `ns`.
fn ss_members(ns: &Netns, port: u16) -> Vec<(u64, u64)> {
    let out = run(ns
        .command("ss")
        .args(["-Hltn", "sport", "=", &format!(":{port}")]));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// The listener's labels.
type Labels<'a> = [(&'static str, &'a str); 2];

/// Connections hashed over both members: the running worker accepts its share, the
/// stopped one's member fills (limit + 1) and then drops SYNs. Returns the clients (their
/// SYNs are retransmitted until they are closed).
fn client_load(ns: &Netns, addr: std::net::SocketAddr) -> Vec<socket2::Socket> {
    ns.enter(|| {
        let clients: Vec<_> = (0..40)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr.into());
                sleep(Duration::from_millis(10));
                s
            })
            .collect::<Vec<_>>();
        // One SYN retransmit (1 s) of the dropped ones.
        sleep(Duration::from_millis(1500));
        clients
    })
}

/// The gauges describe the full member, not a sum; one info series, owned by the lowest
/// pid; the saturation alert's expression is true.
fn gauges_show_the_full_member(
    daemon: &Daemon,
    listener: &Labels,
    backlog: u64,
    members: usize,
    lowest_pid: u32,
) {
    // Wait for an inventory pass after the load, then read the gauges.
    let full = |m: &[prometheus_parse::Sample]| {
        sum(m, "listendrop_accept_queue_length", listener) == (backlog + 1) as f64
    };
    assert!(
        daemon.wait_for_metric(Duration::from_secs(20), full),
        "the gauges never showed the full member"
    );
    let metrics = daemon.metrics();
    let gauge = |name: &str| sum(&metrics, name, listener);
    let length = gauge("listendrop_accept_queue_length");
    let limit = gauge("listendrop_accept_queue_limit");
    assert_eq!(
        (length, limit),
        ((backlog + 1) as f64, backlog as f64),
        "the fullest member's queue, not the group's sum"
    );
    assert!(gauge("listendrop_accept_queue_high_water") >= length);
    assert_eq!(gauge("listendrop_reuseport_members"), members as f64);
    // The AcceptQueueSaturated alert's expression (deploy/prometheus/alerts.yml).
    assert!(
        length / limit > 0.9,
        "the saturation alert would stay silent"
    );
    let info: Vec<_> = metrics
        .iter()
        .filter(|s| s.metric == "listendrop_listener_info")
        .filter(|s| listener.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(info.len(), 1, "one info series per listener: {info:#?}");
    assert_eq!(
        info[0].labels.get("pid"),
        Some(lowest_pid.to_string().as_str())
    );
}

/// `status` lists the members, each with its queue and owner.
fn status_lists_the_members(netns: &str, port: u16, backlog: u64, workers: &[Holder]) {
    let (_, entry) = status_json(netns, port, &["--no-daemon"]);
    assert_eq!(entry["reuseport_members"], 2);
    assert_eq!(entry["accept_queue_length"], backlog + 1);
    let owners: Vec<String> = entry["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["owner"].as_str().unwrap().to_owned())
        .collect();
    for worker in workers {
        assert!(
            owners
                .iter()
                .any(|o| o.starts_with(&format!("{}/", worker.id()))),
            "{owners:?}"
        );
    }
}

#[test]
fn a_stopped_worker_of_a_reuseport_group_shows_as_a_full_queue() {
    if !require_root("a_stopped_worker_of_a_reuseport_group_shows_as_a_full_queue") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let ns = Netns::new("reuseport");
    let backlog: u64 = 4;
    // Two workers, each the only holder of its member (what servers that open their
    // sockets in the workers do).
    let (addr, workers) = ns.enter(|| {
        let first = listen_reuseport("127.0.0.1:0".parse().unwrap(), backlog as i32);
        let addr = local(&first);
        let second = listen_reuseport(addr, backlog as i32);
        let workers = [serve_in_child(&first), serve_in_child(&second)];
        (addr, workers)
    });
    let port = addr.port();
    let (running, stopped) = (&workers[0], &workers[1]);
    let netns = ns.inode.to_string();
    let port_label = port.to_string();
    let listener = [
        ("netns", netns.as_str()),
        ("listen_port", port_label.as_str()),
    ];
    // The daemon knows both members and their owners before the load starts (so that the
    // kernel has generated their cookies and each drop can name its member's owner).
    assert!(
        daemon.wait_for_metric(Duration::from_secs(20), |m| {
            sum(m, "listendrop_reuseport_members", &listener) == 2.0
        }),
        "the inventory never saw both members"
    );
    kill(Pid::from_raw(stopped.id() as i32), Signal::SIGSTOP).unwrap();
    let before = ns.nstat();
    let clients = client_load(&ns, addr);
    let members = ss_members(&ns, port);
    assert_eq!(members.len(), 2, "ss lists both members: {members:?}");
    assert!(
        members.contains(&(backlog + 1, backlog)),
        "the stopped worker's member is full: {members:?}"
    );
    gauges_show_the_full_member(
        &daemon,
        &listener,
        backlog,
        members.len(),
        running.id().min(stopped.id()),
    );
    status_lists_the_members(&netns, port, backlog, &workers);

    // The counts equal the kernel's: every drop is attributed or said to be unattributed;
    // where the SYN-time hooks attach, each drop is the stopped member's, and its log line
    // names that member's owner (the worker that stopped), not the group's.
    // The clients' SYN retransmits go on until they are closed: the kernel's counters and
    // the daemon's are read after that.
    drop(clients);
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(overflows > 0, "the load dropped nothing");
    let reason = "syn_accept_queue_full";
    if expect::counted(
        &daemon.metrics(),
        &ns,
        "listendrop_drops_total",
        reason,
        &[("listen_port", &port_label)],
        overflows,
        "ListenOverflows",
    ) {
        let owner = format!(" owner={}/", stopped.id());
        daemon.wait_for_lines(Duration::from_secs(10), |_| {
            !expect::lines(&daemon, &ns, reason).is_empty()
        });
        let lines = expect::lines(&daemon, &ns, reason);
        assert!(!lines.is_empty());
        assert!(
            lines.iter().all(|l| l.contains(&owner)),
            "{owner}: {lines:#?}"
        );
    }
    expect::reconciled(&daemon, &ns, after["TcpExtListenDrops"]);
    assert!(daemon.stop().success());
}
