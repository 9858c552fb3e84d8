//! Start and stop: nothing left in the kernel after SIGTERM or SIGINT.

use std::{process::Command, time::Duration};

use crate::support::{
    bpf::{self, programs_of},
    daemon::Daemon,
    netns::run,
    require_root,
};

/// Whether program `id` is loaded, as bpftool sees it.
fn program_loaded(id: u64) -> bool {
    bpf::exists("prog", id)
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
        // This daemon's programs and maps (a host-wide `bpftool prog list` before and
        // after would also see the daemons of tests running alongside).
        let ids = programs_of(daemon.pid());
        let maps = bpf::objects_of(daemon.pid(), "map");
        assert!(!ids.is_empty(), "the daemon holds no eBPF program");
        assert!(!maps.is_empty(), "the daemon holds no eBPF map");
        // bpftool sees each of them now.
        for id in &ids {
            run(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]));
        }
        for id in &maps {
            run(Command::new("bpftool").args(["map", "show", "id", &id.to_string()]));
        }
        let status = daemon.stop_with(signal);
        assert!(status.success(), "{signal}: {status}");
        // A program attached to a tracepoint (tp_btf, raw_tp) is freed after an RCU grace
        // period (6.10+), its maps when their last program is: not at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (mut programs, mut maps) = (ids, maps);
        while !(programs.is_empty() && maps.is_empty()) && std::time::Instant::now() < deadline {
            programs.retain(|id| program_loaded(*id));
            maps.retain(|id| bpf::exists("map", *id));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            programs.is_empty(),
            "programs {programs:?} still loaded after {signal}"
        );
        assert!(maps.is_empty(), "maps {maps:?} still exist after {signal}");
    }
}

#[test]
fn check_reports_what_the_daemon_attaches() {
    if !require_root("check_reports_what_the_daemon_attaches") {
        return;
    }
    let mut cmd = Command::new(crate::support::daemon::binary());
    cmd.arg("check");
    if let Ok(kind) = std::env::var("LISTENDROP_PROBE_KIND") {
        cmd.args(["--probe-kind", &kind]);
    }
    // `check` loads and attaches every program, then detaches it.
    let out = {
        let _changing = crate::support::daemon::changing_programs();
        cmd.output().unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let daemon = Daemon::start(&[]);
    let metrics = daemon.metrics();
    for sample in metrics.iter().filter(|s| s.metric == "listendrop_coverage") {
        let reason = sample.labels.get("reason").unwrap();
        let covered = crate::support::daemon::value(sample) == 1.0;
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(reason))
            .unwrap_or_else(|| panic!("check does not list {reason}:\n{text}"));
        assert_eq!(line.contains("[ok]"), covered, "{line}");
    }
    assert!(daemon.stop().success());
}

/// The kernel matrix (and the host run of `cargo xtask test`) says, per kernel, which
/// kind each hook must be attached with (`LISTENDROP_EXPECT_HOOKS`: `probe=kind` pairs,
/// `none` for a hook that cannot attach there): the README's hook table, proven.
#[test]
fn hooks_attach_with_the_kinds_this_kernel_is_known_for() {
    if !require_root("hooks_attach_with_the_kinds_this_kernel_is_known_for") {
        return;
    }
    let Ok(expected) = std::env::var("LISTENDROP_EXPECT_HOOKS") else {
        assert!(
            std::env::var_os("LISTENDROP_VM").is_none(),
            "the kernel matrix must say which kinds to expect (LISTENDROP_EXPECT_HOOKS)"
        );
        println!("skipped: no LISTENDROP_EXPECT_HOOKS for this kernel");
        return;
    };
    let pairs: Vec<(&str, &str)> = expected
        .split(',')
        .map(|p| p.split_once('=').expect("probe=kind"))
        .collect();
    assert!(!pairs.is_empty(), "empty LISTENDROP_EXPECT_HOOKS");
    let daemon = Daemon::start(&[]);
    let metrics = daemon.metrics();
    let attached: Vec<(String, String)> = metrics
        .iter()
        .filter(|s| s.metric == "listendrop_probe_attached")
        .filter(|s| crate::support::daemon::value(s) == 1.0)
        .map(|s| {
            (
                s.labels.get("probe").unwrap().to_owned(),
                s.labels.get("kind").unwrap().to_owned(),
            )
        })
        .collect();
    for (probe, kind) in &pairs {
        let got: Vec<&str> = attached
            .iter()
            .filter(|(p, _)| p == probe)
            .map(|(_, k)| k.as_str())
            .collect();
        let want: Vec<&str> = if *kind == "none" { vec![] } else { vec![kind] };
        assert_eq!(got, want, "{probe}: attached as {got:?}, expected {kind}");
    }
    // Nothing attached that the expectation does not name.
    for (probe, kind) in &attached {
        assert!(
            pairs.iter().any(|(p, _)| p == probe),
            "{probe} attached as {kind}, not in LISTENDROP_EXPECT_HOOKS"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn gone_listeners_expire_from_metrics_and_the_kernel_map() {
    if !require_root("gone_listeners_expire_from_metrics_and_the_kernel_map") {
        return;
    }
    let daemon = Daemon::start(&["--stale-after-secs", "2", "--inventory-interval-secs", "1"]);
    let ns = crate::support::netns::Netns::new("expire");
    let scenario = crate::support::scenarios::ack_overflow(&ns, "127.0.0.1:0", None, 1);
    let netns = ns.inode.to_string();
    let port = scenario.listener.port().to_string();
    let labels = [("netns", netns.as_str()), ("listen_port", port.as_str())];
    let present = |m: &[prometheus_parse::Sample]| {
        m.iter().any(|s| {
            s.metric == "listendrop_drops_total"
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    };
    assert!(present(&daemon.metrics()), "the drops were not counted");
    // The listener is closed: after the stale time its series go, and stay gone (the
    // kernel entry was freed too, or the next scrape would bring them back).
    // Expiry needs two inventory passes 2 s apart; a pass can take seconds on an emulated
    // guest with other tests' daemons walking /proc beside it, so the wait is generous
    // and a failure says how long the passes took.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = daemon.metrics();
        if !present(&metrics) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let (pass, log) = inventory_report(&daemon, &metrics);
            panic!(
                "the series never expired in 60 s (last inventory pass {pass:?} s); the \
                 daemon's inventory and warning lines: {log:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !present(&daemon.metrics()),
        "the series came back: the kernel entry remained"
    );
    assert!(daemon.stop().success());
}

#[test]
fn churn_of_listeners_and_namespaces_leaves_no_series_behind() {
    if !require_root("churn_of_listeners_and_namespaces_leaves_no_series_behind") {
        return;
    }
    use crate::support::{daemon::sum, netns::Netns, sockets::listen};
    // 600 sockets at once next to the other tests': up to the hard limit of descriptors.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        hard.min(65536),
        hard,
    );
    // The scenario's listener closes when it ends, and its drops go with it once stale: 10 s
    // leaves time to see them (a scrape of 600 listeners takes seconds on an emulated guest).
    let daemon = Daemon::start(&["--stale-after-secs", "10", "--inventory-interval-secs", "1"]);
    let per_namespace = 200;
    let mut churned = Vec::new();
    for round in 0..3 {
        // Three namespaces of 200 listeners each, and drops on one more listener (kernel
        // counter entries) ...
        let namespaces: Vec<Netns> = (0..3)
            .map(|i| Netns::new(&format!("churn{round}{i}")))
            .collect();
        let sockets: Vec<Vec<socket2::Socket>> = namespaces
            .iter()
            .map(|ns| {
                ns.enter(|| {
                    (0..per_namespace)
                        .map(|_| listen("127.0.0.1:0".parse().unwrap(), 16, None))
                        .collect()
                })
            })
            .collect();
        crate::support::scenarios::ack_overflow(&namespaces[0], "127.0.0.1:0", None, 1);
        let inodes: Vec<String> = namespaces.iter().map(|n| n.inode.to_string()).collect();
        // (A pass over 600 listeners beside other tests takes seconds on an emulated guest.)
        let saw_drops = std::cell::Cell::new(false);
        let seen = daemon.wait_for_metric(Duration::from_secs(90), |m| {
            saw_drops.set(
                saw_drops.get() || sum(m, "listendrop_drops_total", &[("netns", &inodes[0])]) > 0.0,
            );
            saw_drops.get()
                && inodes.iter().all(|netns| {
                    m.iter()
                        .filter(|s| {
                            s.metric == "listendrop_listener_info"
                                && s.labels.get("netns") == Some(netns.as_str())
                        })
                        .count()
                        >= per_namespace
                })
        });
        if !seen {
            // What it showed instead, and how its inventory fared.
            let m = daemon.metrics();
            let shown: Vec<(String, usize)> = inodes
                .iter()
                .map(|netns| {
                    let n = m
                        .iter()
                        .filter(|s| {
                            s.metric == "listendrop_listener_info"
                                && s.labels.get("netns") == Some(netns.as_str())
                        })
                        .count();
                    (netns.clone(), n)
                })
                .collect();
            let (pass, log) = inventory_report(&daemon, &m);
            panic!(
                "round {round}: the daemon never showed every listener: listener_info per \
                 namespace {shown:?} (want {per_namespace} each), drops in the first {} (seen: {}), \
                 last inventory pass {pass:?} s; its inventory and warning lines: {log:#?}",
                sum(&m, "listendrop_drops_total", &[("netns", &inodes[0])]),
                saw_drops.get()
            );
        }
        // ... then all of it goes away.
        drop(sockets);
        drop(namespaces);
        churned.extend(inodes);
    }
    // After the stale time nothing names any of those namespaces, and nothing comes back
    // (the kernel entries were freed too): memory does not grow with churn.
    let leftovers = |m: &[prometheus_parse::Sample]| {
        m.iter()
            .filter(|s| {
                s.labels
                    .get("netns")
                    .is_some_and(|n| churned.iter().any(|c| c == n))
            })
            .map(|s| format!("{}{:?}", s.metric, s.labels))
            .collect::<Vec<_>>()
    };
    let clean = daemon.wait_for_metric(Duration::from_secs(60), |m| leftovers(m).is_empty());
    assert!(clean, "left behind: {:#?}", leftovers(&daemon.metrics()));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        leftovers(&daemon.metrics()),
        Vec::<String>::new(),
        "came back"
    );
    assert!(daemon.stop().success());
}

/// For a failure that depends on the inventory: the last pass's duration in seconds and the
/// daemon's inventory and warning lines.
fn inventory_report(
    daemon: &Daemon,
    metrics: &[prometheus_parse::Sample],
) -> (Option<f64>, Vec<String>) {
    let pass = metrics
        .iter()
        .find(|s| s.metric == "listendrop_inventory_duration_seconds")
        .map(crate::support::daemon::value);
    let log = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains("inventory") || l.contains("WARN"))
        .collect();
    (pass, log)
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The programs' own statistics, as the kernel keeps them: runs and run time while
/// `kernel.bpf_stats_enabled=1` (and absent when it is 0), and misses where the kernel
/// counts them (recursion_misses 5.12+; kprobe misses 6.7+).
#[test]
fn program_runs_time_and_misses_come_from_the_kernel() {
    if !require_root("program_runs_time_and_misses_come_from_the_kernel") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let before = daemon.metrics();
    let stats_were = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    if stats_were.trim() == "0" {
        assert!(
            !before
                .iter()
                .any(|s| s.metric == "listendrop_bpf_program_runs_total"),
            "run counts exported while the kernel does not count runs"
        );
    }
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
    let ns = crate::support::netns::Netns::new("progstats");
    crate::support::scenarios::ack_overflow(&ns, "127.0.0.1:0", None, 1);
    // The kernel's own figures (bpftool) just before and just after the scrape bound
    // what the daemon exports: the same counters, in seconds.
    let programs = programs_of(daemon.pid());
    let totals = || {
        programs
            .iter()
            .map(|&id| bpf::program(id))
            .fold((0, 0), |(t, n), p| (t + p.run_time_ns, n + p.run_cnt))
    };
    let low = totals();
    let metrics = daemon.metrics();
    let high = totals();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_were.trim()).unwrap();
    let runs = crate::support::daemon::sum(&metrics, "listendrop_bpf_program_runs_total", &[]);
    let seconds =
        crate::support::daemon::sum(&metrics, "listendrop_bpf_program_run_seconds_total", &[]);
    assert!(runs > 0.0, "no program ran during an overflow scenario");
    assert!(
        (low.1 as f64..=high.1 as f64).contains(&runs),
        "{runs} runs exported, the kernel counted {} then {}",
        low.1,
        high.1
    );
    // The f64 seconds may round the last nanosecond.
    let ns_exported = (seconds * 1e9).round();
    assert!(
        (low.0 as f64 - 1.0..=high.0 as f64 + 1.0).contains(&ns_exported),
        "{seconds} s exported, the kernel counted {} ns then {} ns",
        low.0,
        high.0
    );
    // Misses: present for every program where this kernel counts them.
    let kinds: Vec<String> = metrics
        .iter()
        .filter(|s| s.metric == "listendrop_probe_attached")
        .filter(|s| crate::support::daemon::value(s) == 1.0)
        .map(|s| s.labels.get("kind").unwrap().to_owned())
        .collect();
    let version = kernel_version();
    let missed: Vec<_> = metrics
        .iter()
        .filter(|s| s.metric == "listendrop_bpf_missed_total")
        .collect();
    let programs: std::collections::BTreeSet<&str> = metrics
        .iter()
        .filter(|s| s.metric == "listendrop_bpf_program_runs_total")
        .map(|s| s.labels.get("program").unwrap())
        .collect();
    let kprobes = kinds.iter().any(|k| k == "kprobe");
    if version >= (6, 7) || (version >= (5, 12) && !kprobes) {
        assert_eq!(
            missed.len(),
            programs.len(),
            "one misses series per program on {version:?}"
        );
    }
    assert!(daemon.stop().success());
}
