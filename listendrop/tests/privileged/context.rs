//! Listener context (issue 4): owner, queues, sysctls, kernel counters, reconciliation,
//! `listendrop status` and `listendrop trace`, against a real owner process, `ss`,
//! `/proc/sys` and `nstat` inside the test's namespace.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::support::{
    daemon::{binary, status_json, sum, Daemon},
    expect,
    netns::{delta, run, Netns},
    require_root,
    sockets::{connect, hold_in_child, listen, local},
};

/// A listener owned by a `sleep` process, with its accept queue full and one more client
/// whose SYNs are dropped (syn_accept_queue_full).
struct Owned {
    ns: Netns,
    addr: SocketAddr,
    owner: crate::support::sockets::Holder,
    _clients: Vec<std::net::TcpStream>,
    _victim: socket2::Socket,
}

fn owned_full_listener(tag: &str, backlog: i32, somaxconn: &str) -> Owned {
    let ns = Netns::new(tag);
    ns.sysctl("net.core.somaxconn", somaxconn);
    ns.sysctl("net.ipv4.tcp_synack_retries", "3");
    let (addr, owner, clients, victim) = ns.enter(|| {
        let socket = listen("127.0.0.1:0".parse().unwrap(), backlog, None);
        let addr = local(&socket);
        let owner = hold_in_child(&socket);
        drop(socket);
        let clients: Vec<_> = (0..=backlog).map(|_| connect(addr)).collect();
        sleep(Duration::from_millis(50));
        let victim =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        victim.set_nonblocking(true).unwrap();
        let _ = victim.connect(&addr.into());
        (addr, owner, clients, victim)
    });
    Owned {
        ns,
        addr,
        owner,
        _clients: clients,
        _victim: victim,
    }
}

/// (Recv-Q, Send-Q) of the listener on `port` as `ss -lnt` prints them in `ns`.
fn ss_queues(ns: &Netns, port: u16) -> (u64, u64) {
    let out = run(ns
        .command("ss")
        .args(["-Hltn", "sport", "=", &format!(":{port}")]));
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(fields.len() >= 4, "unexpected ss output: {out}");
    (fields[1].parse().unwrap(), fields[2].parse().unwrap())
}

/// Waits until the daemon's inventory shows the listener.
fn wait_for_listener(daemon: &Daemon, ns: &Netns, port: u16) -> Vec<prometheus_parse::Sample> {
    wait_for_inventory(daemon, ns, port, "the listener", |_| true)
}

/// Waits until the daemon's inventory shows the listener with `shown` true of its series.
/// An inventory pass reads the sockets before it looks for their owners in /proc (slow
/// under emulation: arm64 guests), so the first pass that names the owner may hold the
/// queues of a moment before the clients connected; a later pass must show them.
fn wait_for_inventory(
    daemon: &Daemon,
    ns: &Netns,
    port: u16,
    what: &str,
    shown: impl Fn(&[prometheus_parse::Sample]) -> bool,
) -> Vec<prometheus_parse::Sample> {
    let netns = ns.inode.to_string();
    let port = port.to_string();
    let listed = |metrics: &[prometheus_parse::Sample]| {
        metrics.iter().any(|s| {
            s.metric == "listendrop_listener_info"
                && s.labels.get("netns") == Some(netns.as_str())
                && s.labels.get("listen_port") == Some(port.as_str())
        }) && shown(metrics)
    };
    assert!(
        daemon.wait_for_metric(Duration::from_secs(30), listed),
        "the inventory never showed {what} in 30 s"
    );
    // Nothing changes the listener after that: the next scrape shows the same.
    daemon.metrics()
}

/// Waits until the daemon's inventory shows the owned listener as `ss` and /proc see it
/// now: held by its owner, its accept queue as long as `ss` says. Nothing changes it once
/// the scenario is set up (nobody accepts), so every pass after that must show it.
fn wait_for_owned(daemon: &Daemon, owned: &Owned) -> Vec<prometheus_parse::Sample> {
    let (recv_q, _) = ss_queues(&owned.ns, owned.addr.port());
    let netns = owned.ns.inode.to_string();
    let port = owned.addr.port().to_string();
    let pid = owned.owner.id().to_string();
    let what = format!("pid {pid} owning the listener with Recv-Q {recv_q} (as ss says)");
    wait_for_inventory(daemon, &owned.ns, owned.addr.port(), &what, |m| {
        let listener = [("netns", netns.as_str()), ("listen_port", port.as_str())];
        let owner = m.iter().any(|s| {
            s.metric == "listendrop_listener_info"
                && listener.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.get("pid") == Some(pid.as_str())
        });
        owner && sum(m, "listendrop_accept_queue_length", &listener) == recv_q as f64
    })
}

/// The labels of one listener.
type Labels<'a> = [(&'static str, &'a str); 2];

/// The info series names the owner as /proc does: pid, comm, cgroup.
fn owner_as_proc_says(metrics: &[prometheus_parse::Sample], listener: &Labels, owned: &Owned) {
    let info = metrics
        .iter()
        .find(|s| {
            s.metric == "listendrop_listener_info"
                && listener.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap();
    assert_eq!(
        info.labels.get("pid"),
        Some(owned.owner.id().to_string().as_str())
    );
    assert_eq!(info.labels.get("comm"), Some("sleep"));
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", owned.owner.id())).unwrap();
    assert!(
        cgroup.contains(info.labels.get("cgroup").unwrap()),
        "{cgroup}"
    );
}

/// The queue gauges are what `ss` shows (the high-water mark at least the length).
fn queues_as_ss_says(metrics: &[prometheus_parse::Sample], listener: &Labels, owned: &Owned) {
    let ns = &owned.ns;
    let (recv_q, send_q) = ss_queues(ns, owned.addr.port());
    assert_eq!((recv_q, send_q), (6, 5), "backlog 5 holds 6");
    assert_eq!(
        sum(metrics, "listendrop_accept_queue_length", listener),
        recv_q as f64
    );
    assert_eq!(
        sum(metrics, "listendrop_accept_queue_limit", listener),
        send_q as f64
    );
    assert!(sum(metrics, "listendrop_accept_queue_high_water", listener) >= recv_q as f64);
}

/// Each namespaced sysctl is what the namespace's /proc says.
fn sysctls_as_proc_says(metrics: &[prometheus_parse::Sample], ns: &Netns) {
    let netns = ns.inode.to_string();
    for (name, path) in [
        ("net.core.somaxconn", "/proc/sys/net/core/somaxconn"),
        (
            "net.ipv4.tcp_synack_retries",
            "/proc/sys/net/ipv4/tcp_synack_retries",
        ),
        (
            "net.ipv4.tcp_syncookies",
            "/proc/sys/net/ipv4/tcp_syncookies",
        ),
        (
            "net.ipv4.tcp_abort_on_overflow",
            "/proc/sys/net/ipv4/tcp_abort_on_overflow",
        ),
        (
            "net.ipv4.tcp_max_syn_backlog",
            "/proc/sys/net/ipv4/tcp_max_syn_backlog",
        ),
    ] {
        let value: f64 = run(ns.command("cat").arg(path)).trim().parse().unwrap();
        assert_eq!(
            sum(
                metrics,
                "listendrop_sysctl",
                &[("netns", &netns), ("name", name)]
            ),
            value,
            "{name}"
        );
    }
}

/// The kernel counters are nstat's, and the drops reconcile: attributed where the class
/// is covered, unattributed otherwise.
fn counters_reconcile(daemon: &Daemon, ns: &Netns) {
    let netns = ns.inode.to_string();
    let drop_counters = |m: &[prometheus_parse::Sample]| {
        let k = |c: &str| {
            sum(
                m,
                "listendrop_kernel_netstat_total",
                &[("netns", &netns), ("counter", c)],
            )
        };
        (k("TcpExtListenOverflows"), k("TcpExtListenDrops"))
    };
    // Both readings are from the same inventory pass only if taken together: compare with
    // nstat right after a scrape and accept the counters being ahead by a retransmit.
    let metrics = daemon.metrics();
    let nstat = ns.nstat();
    let (overflows, drops) = drop_counters(&metrics);
    assert!(overflows >= 1.0, "the victim's SYN was dropped");
    assert!(drops <= *nstat.get("TcpExtListenDrops").unwrap() as f64);
    let ours = sum(&metrics, "listendrop_drops_total", &[("netns", &netns)]);
    let unattributed = sum(
        &metrics,
        "listendrop_unattributed_drops_total",
        &[("netns", &netns)],
    );
    if expect::covered(&metrics, "syn_accept_queue_full") {
        // Drops are read at scrape time, after the kernel counters of the last pass.
        assert_eq!(unattributed, 0.0, "drops unattributed with full coverage");
    } else {
        assert_eq!(ours, 0.0);
        assert_eq!(
            unattributed, drops,
            "SYN-time drops are unattributed on this kernel"
        );
    }
}

#[test]
fn owner_queues_sysctls_and_counters_match_the_system() {
    if !require_root("owner_queues_sysctls_and_counters_match_the_system") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let before_start = Instant::now();
    let owned = owned_full_listener("ctx", 5, "1000");
    let ns = &owned.ns;
    sleep(Duration::from_millis(1500)); // a dropped SYN retransmit or two
    let metrics = wait_for_owned(&daemon, &owned);
    let netns = ns.inode.to_string();
    let port = owned.addr.port().to_string();
    let listener = [("netns", netns.as_str()), ("listen_port", port.as_str())];
    owner_as_proc_says(&metrics, &listener, &owned);
    queues_as_ss_says(&metrics, &listener, &owned);
    sysctls_as_proc_says(&metrics, ns);
    // The namespace was born after the daemon started, so all its ListenDrops happened
    // under listendrop's eyes.
    assert!(before_start.elapsed() < Duration::from_secs(60));
    counters_reconcile(&daemon, ns);
    assert!(daemon.stop().success());
}

#[test]
fn status_shows_owner_queue_and_diagnosis() {
    if !require_root("status_shows_owner_queue_and_diagnosis") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let owned = owned_full_listener("status", 5, "1000");
    sleep(Duration::from_millis(1500));
    wait_for_owned(&daemon, &owned);
    let netns = owned.ns.inode.to_string();
    for via_daemon in [true, false] {
        let daemon_addr = daemon.addr.to_string();
        let mut options = vec!["--daemon", daemon_addr.as_str()];
        if !via_daemon {
            options.push("--no-daemon");
        }
        let (doc, row) = status_json(&netns, owned.addr.port(), &options);
        assert_eq!(doc["daemon"], via_daemon);
        assert_eq!(row["owner"], format!("{}/sleep", owned.owner.id()));
        assert_eq!(row["accept_queue_length"], 6);
        assert_eq!(row["accept_queue_limit"], 5);
        let diagnosis = row["diagnosis"].to_string();
        assert!(
            diagnosis.contains("backlog 5 caps the accept queue below net.core.somaxconn 1000"),
            "{diagnosis}"
        );
    }
    // The table too.
    let out = Command::new(binary())
        .args([
            "status",
            "--netns",
            &netns,
            "--daemon",
            &daemon.addr.to_string(),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{}/sleep", owned.owner.id())),
        "{table}"
    );
    assert!(table.contains("6/5"), "{table}");
    assert!(table.contains("! backlog 5 caps"), "{table}");
    assert!(daemon.stop().success());
}

/// `trace --json` prints one object per dropped packet, every one of them, even when it
/// is not scheduled while the drops happen and is told to stop at once after (it is held
/// with SIGSTOP during the scenario, then gets SIGCONT and SIGTERM together): what the
/// ring holds at the stop is printed before it exits, and its last line on stderr says
/// how many events it showed (and what it lost, if anything).
#[test]
fn trace_json_emits_one_object_per_drop() {
    if !require_root("trace_json_emits_one_object_per_drop") {
        return;
    }
    let ns = Netns::new("trace");
    let mut cmd = Command::new(binary());
    cmd.args(["trace", "--json", "--netns", &ns.inode.to_string()]);
    if let Ok(kind) = std::env::var("LISTENDROP_PROBE_KIND") {
        cmd.args(["--probe-kind", &kind]);
    }
    // Its programs are attached once it waits for drops.
    let changing = crate::support::daemon::changing_programs();
    let mut trace = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(trace.stderr.take().unwrap()).lines();
    let mut ready = false;
    for line in stderr.by_ref().map_while(Result::ok) {
        eprintln!("[trace] {line}");
        if line.contains("waiting for drops") {
            ready = true;
            break;
        }
    }
    drop(changing);
    assert!(ready, "trace did not start");
    let rest = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<String>>());
    let stdout = trace.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let pid = nix::unistd::Pid::from_raw(trace.id() as i32);
    let signal = |s| nix::sys::signal::kill(pid, s).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    let before = ns.nstat();
    let scenario = crate::support::scenarios::ack_overflow(&ns, "127.0.0.1:0", None, 2);
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    assert!(overflows > 0, "the scenario made no drop: nothing to trace");
    let changing = crate::support::daemon::changing_programs();
    signal(nix::sys::signal::Signal::SIGCONT);
    signal(nix::sys::signal::Signal::SIGTERM);
    let status = trace.wait().unwrap();
    drop(changing);
    let rest = rest.join().unwrap();
    for line in &rest {
        eprintln!("[trace] {line}");
    }
    assert!(status.success(), "{status}");
    let lines = reader.join().unwrap();
    // Its summary counts what it printed (other tests' drops, in other namespaces, are
    // received and not shown; their floods may also cost events, which it would name).
    // (Its inventory thread may still log a line after the summary.)
    let summary = rest
        .iter()
        .rev()
        .find(|l| l.starts_with("listendrop trace: ") && l.contains(" shown of "))
        .map_or("", String::as_str);
    assert!(
        summary.starts_with(&format!("listendrop trace: {} shown of ", lines.len())),
        "trace's summary on stderr: {summary:?} in {rest:#?}"
    );
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let drops: Vec<_> = objects
        .iter()
        .filter(|o| o["reason"] == "ack_accept_queue_full")
        .collect();
    // One object per dropped packet, unless the kernel handed some to no eBPF program.
    match crate::support::witness::withheld(
        ns.inode,
        Some(scenario.listener.port()),
        drops.len() as u64,
        overflows,
    ) {
        Some(why) => println!("{} of {overflows} objects: {why}", drops.len()),
        None => assert_eq!(
            drops.len() as u64,
            overflows,
            "one object per dropped packet ({summary}; {}; eBPF links attached or detached \
             while scenarios counted: {:?})",
            scenario.kernel_account(&before, &after),
            crate::support::programs::changes_while_counting()
        ),
    }
    for o in drops {
        assert_eq!(o["netns"], ns.inode);
        assert_eq!(o["client_addr"], "127.0.0.1");
        assert!(
            scenario
                .victims
                .contains(&(o["client_port"].as_u64().unwrap() as u16)),
            "{o}"
        );
        assert_eq!(o["server_port"], scenario.listener.port());
        assert_eq!(o["listen_port"], scenario.listener.port());
    }
}

/// The listener's socket cookie (SO_COOKIE), which also makes the kernel generate it
/// now, as the daemon's sock_diag would at its next pass.
fn cookie_of(socket: &socket2::Socket) -> u64 {
    use std::os::fd::AsRawFd as _;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt on an fd we own, into a live u64 with its size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

#[test]
fn high_water_catches_a_queue_that_sampling_misses() {
    if !require_root("high_water_catches_a_queue_that_sampling_misses") {
        return;
    }
    let daemon = Daemon::start(&["--inventory-interval-secs", "1"]);
    let ns = Netns::new("hiwater");
    // The queue fills to 4 (of 3) and an ACK-time drop happens there; within a few
    // milliseconds every connection is accepted. Sampling every second almost never
    // sees the 4; the eBPF hooks see it at the drop (and, with probes, at each SYN and
    // handshake).
    let listener = ns.enter(|| {
        let listener = listen("127.0.0.1:0".parse().unwrap(), 3, Some(1));
        assert_ne!(cookie_of(&listener), 0);
        let addr = local(&listener);
        let mut victim = connect(addr);
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let mut filler = connect(addr);
            crate::support::sockets::poke(&mut filler);
            sleep(Duration::from_millis(20));
            fillers.push(filler);
        }
        crate::support::sockets::poke(&mut victim);
        sleep(Duration::from_millis(30));
        // Accept everything, including the victim once its retransmit gets in.
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_millis(1500);
        let mut accepted = Vec::new();
        while Instant::now() < until {
            match listener.accept() {
                Ok(conn) => accepted.push(conn),
                Err(_) => sleep(Duration::from_millis(5)),
            }
        }
        drop((victim, fillers, accepted));
        listener
    });
    let port = local(&listener).port().to_string();
    let netns = ns.inode.to_string();
    let labels = [("netns", netns.as_str()), ("listen_port", port.as_str())];
    let metrics = wait_for_listener(&daemon, &ns, local(&listener).port());
    assert_eq!(
        sum(&metrics, "listendrop_accept_queue_length", &labels),
        0.0,
        "drained"
    );
    if !expect::covered(&metrics, "ack_accept_queue_full") {
        println!("no ACK-time hook here: nothing observes the queue between samples");
        return;
    }
    assert!(
        sum(&metrics, "listendrop_accept_queue_high_water", &labels) >= 4.0,
        "the high-water mark missed the full queue"
    );
    drop(listener);
    assert!(daemon.stop().success());
}
