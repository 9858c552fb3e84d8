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
