//! Against the real system (root): sockets handed to real `sleep` processes, whose pid
//! and comm are known.

use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
use std::{collections::BTreeSet, time::Duration};

use crate::support::{netns::Netns, require_root, sockets::listen, tools::Sleeper};
use listendrop::inventory::owners::*;

/// The cgroup path `/proc/PID/cgroup` gives the process, read directly: the unified
/// hierarchy's (`0::PATH`) when there is one, else the first hierarchy's, else none (a
/// kernel without cgroups mounted, as in the VMs).
fn cgroup_of(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = |l: &str| l.splitn(3, ':').nth(2).map(str::to_owned);
    text.lines()
        .find(|l| l.starts_with("0::"))
        .and_then(path)
        .or_else(|| text.lines().next().and_then(path))
        .unwrap_or_default()
}

#[test]
fn owner_is_the_process_holding_the_socket() {
    if !require_root("owner_is_the_process_holding_the_socket") {
        return;
    }
    let ns = Netns::new("inv-own");
    let socket = ns.enter(|| listen("127.0.0.1:0".parse().unwrap(), 16, None));
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .unwrap()
        .ino();
    // Two processes share the listener, like forked workers.
    let first = Sleeper::start(&ns, &[&socket]);
    let second = Sleeper::start(&ns, &[&socket]);
    drop(socket);
    let inodes = BTreeSet::from([inode]);

    let mut index = OwnerIndex::new();
    assert!(index.refresh(&inodes));
    let owner = index.get(inode).expect("an owner").clone();
    assert_eq!(owner.pid, first.pid().min(second.pid()), "lowest pid");
    assert_eq!(owner.holders, 2);
    assert_eq!(owner.comm, "sleep");
    assert_eq!(owner.comm, first.comm());
    assert_eq!(owner.cgroup, cgroup_of(owner.pid));

    drop(second);
    assert!(!index.refresh(&inodes), "same listeners: no rescan");
    assert_eq!(index.scans(), 1);
    let now = scan(&inodes);
    assert_eq!(now[&inode].pid, first.pid());
    assert_eq!(now[&inode].holders, 1);

    drop(first);
    assert!(scan(&inodes).is_empty(), "closed with its last holder");
}

#[test]
fn a_sleeping_owner_is_idle() {
    if !require_root("a_sleeping_owner_is_idle") {
        return;
    }
    let ns = Netns::new("inv-cpu");
    let sleeper = Sleeper::start(&ns, &[]);
    let before = cpu_sample(sleeper.pid()).unwrap();
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let after = cpu_sample(sleeper.pid()).unwrap();
    assert_eq!(
        cpu_busy(before, after, start.elapsed(), procfs::ticks_per_second()),
        Some(false)
    );
    let ours = cpu_sample(std::process::id() as i32).unwrap();
    assert!(
        ours.ticks > 0 || cfg!(miri),
        "a test process has used some CPU"
    );
}
