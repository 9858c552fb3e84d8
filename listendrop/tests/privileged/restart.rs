//! Restarts with pinned hooks: no drop missed while no daemon runs (where links can be
//! pinned), counters continued from the pinned maps, and `unpin` leaving nothing behind.

use std::{path::Path, process::Command, sync::Mutex, time::Duration};

use crate::support::{
    bpf::{self, programs_of},
    daemon::{binary, sum, Daemon},
    expect,
    netns::{delta, Netns},
    require_root,
    scenarios::{ack_overflow, AckOverflow},
};

/// Every pinned link and map under `dir`.
fn pins_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

/// What happened across the restart.
struct Restart {
    /// The daemon started after the pause.
    second: Daemon,
    /// The scenario dropping across the restart.
    scenario: AckOverflow,
    /// The one dropping only while no daemon ran, on a listener of its own.
    gap: AckOverflow,
    /// What the first daemon had counted in the namespace when it stopped.
    first_saw: f64,
}

/// Drops keep happening while the daemon restarts: `first` exits in the middle of a
/// scenario (once it has counted drops, however slow the machine), a whole second
/// scenario runs with no daemon, then a second daemon starts. Checks that the programs
/// stay loaded exactly when their links are pinned.
fn restart_during_drops(ns: &Netns, first: Daemon, pin_dir: &str, links_pinned: bool) -> Restart {
    let ids = programs_of(first.pid());
    let first_saw = Mutex::new(0.0);
    let (second, scenario, gap) = std::thread::scope(|s| {
        let run = s.spawn(|| ack_overflow(ns, "127.0.0.1:0", None, 2));
        let netns = ns.inode.to_string();
        // Generous: the scenario may first wait for other tests' daemons to start.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = sum(
                &first.metrics(),
                "listendrop_drops_total",
                &[("netns", &netns)],
            );
            if seen > 0.0 || std::time::Instant::now() > deadline {
                *first_saw.lock().unwrap() = seen;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // In the middle of the scenario, on purpose (`stop` would wait for its end).
        assert!(first.stop_now().success());
        for id in &ids {
            // Pinned links keep the programs loaded (and counting) with no daemon.
            assert_eq!(
                bpf::exists("prog", *id),
                links_pinned,
                "program {id} loaded after the daemon exited"
            );
        }
        // (Counted below on its own listener: the namespace's nstat delta cannot tell it
        // from the first scenario, still dropping alongside.)
        let gap = ack_overflow(ns, "127.0.0.1:0", None, 2);
        let second = Daemon::start(&["--pin-dir", pin_dir]);
        (second, run.join().unwrap(), gap)
    });
    Restart {
        second,
        scenario,
        gap,
        first_saw: first_saw.into_inner().unwrap(),
    }
}

/// With pinned links every drop is counted, those made while no daemon ran included.
fn every_drop_counted(ns: &Netns, restart: &Restart, overflows: u64) {
    let metrics = restart.second.metrics();
    assert!(
        restart
            .second
            .lines()
            .iter()
            .any(|l| l.contains("resumed the hooks")),
        "{:#?}",
        restart.second.lines()
    );
    expect::counted(
        &metrics,
        ns,
        "listendrop_drops_total",
        "ack_accept_queue_full",
        &[],
        overflows,
        "ListenOverflows across the restart",
    );
    let gap_port = restart.gap.listener.port().to_string();
    assert!(
        sum(
            &metrics,
            "listendrop_drops_total",
            &[("netns", &ns.inode.to_string()), ("listen_port", &gap_port)],
        ) >= restart.gap.victims.len() as f64,
        "the drops made while no daemon ran are missing"
    );
    assert_ne!(
        restart.scenario.listener.port(),
        restart.gap.listener.port()
    );
}

/// Without pinned links the counters continue from the pinned maps; what happened while
/// no program was attached is missing.
fn counters_continued(ns: &Netns, restart: &Restart, overflows: u64) {
    let metrics = restart.second.metrics();
    let total = sum(
        &metrics,
        "listendrop_drops_total",
        &[("netns", &ns.inode.to_string())],
    );
    assert!(restart.first_saw > 0.0, "the first daemon saw no drop");
    assert!(
        total >= restart.first_saw,
        "counters restarted from zero: {total} after {}",
        restart.first_saw
    );
    assert!(
        total < overflows as f64,
        "{total} of kernel {overflows}: the drops while no program was attached were counted?"
    );
    println!(
        "this kernel cannot pin perf links: {total} of {overflows} drops counted across the \
         restart"
    );
}

/// `unpin` detaches and frees everything: the pin directory and the programs `ids`.
fn unpin_frees(dir: &Path, mut ids: Vec<u64>) {
    let out = {
        let _changing = crate::support::daemon::changing_programs();
        Command::new(binary())
            .args(["unpin", "--pin-dir", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    // A link attached to a tracepoint (tp_btf, raw_tp) frees its program after an RCU
    // grace period (6.10+), not at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ids.is_empty() && std::time::Instant::now() < deadline {
        ids.retain(|id| bpf::exists("prog", *id));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ids.is_empty(), "programs {ids:?} still loaded after unpin");
}

#[test]
fn restart_with_pins_misses_no_drop_and_unpin_removes_everything() {
    if !require_root("restart_with_pins_misses_no_drop_and_unpin_removes_everything") {
        return;
    }
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/listendrop-test-{}",
        std::process::id()
    ));
    let pin_dir = dir.to_str().unwrap().to_owned();
    let first = Daemon::start(&["--pin-dir", &pin_dir]);
    let ids = programs_of(first.pid());
    assert!(!pins_under(&dir).is_empty(), "nothing pinned in {pin_dir}");
    // Before 5.15 kprobe/tracepoint links are not bpf links: nothing but the maps can be
    // pinned, so the programs go with the daemon and only the counters continue.
    let links_pinned = !first
        .lines()
        .iter()
        .any(|l| l.contains("cannot pin kprobe/tracepoint links"));
    let ns = Netns::new("restart");
    let before = ns.nstat();
    let noted = crate::support::programs::changes_while_counting().len();
    let restart = restart_during_drops(&ns, first, &pin_dir, links_pinned);
    let overflows = delta(&before, &ns.nstat(), "TcpExtListenOverflows");
    if links_pinned {
        every_drop_counted(&ns, &restart, overflows);
    } else {
        // The first daemon's links went with it in the middle of the scenario: the watch
        // on the host's links saw them go (what a count that falls short then names).
        let changes = crate::support::programs::changes_while_counting();
        assert!(
            changes[noted..].iter().any(|c| c.contains("detached")),
            "no link detached while the scenario counted: {changes:?}"
        );
        counters_continued(&ns, &restart, overflows);
    }
    assert!(restart.second.stop().success());
    unpin_frees(&dir, ids);
}
