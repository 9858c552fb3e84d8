//! Start and stop: nothing left in the kernel after SIGTERM or SIGINT.

use std::{process::Command, time::Duration};

use crate::support::{daemon::Daemon, netns::run, require_root};

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
        // bpftool sees each of them loaded now.
        for id in &ids {
            run(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]));
        }
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
    let out = cmd.output().unwrap();
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
