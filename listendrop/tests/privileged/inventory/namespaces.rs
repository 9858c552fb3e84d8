//! Against the real system (root): namespaces made with `ip netns add`, inodes from
//! `stat -L`, a process started inside one with `ip netns exec`.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use listendrop::inventory::namespaces::*;

use crate::support::{
    netns::Netns,
    require_root,
    tools::{stat_inode, Sleeper},
};

#[test]
fn discover_finds_host_named_and_process_namespaces() {
    if !require_root("discover_finds_host_named_and_process_namespaces") {
        return;
    }
    let busy = Netns::new("inv-ns");
    let empty = Netns::new("inv-ns-empty");
    let sleeper = Sleeper::start(&busy, &[]);
    let all = discover().unwrap();

    // kthreadd (pid 2) lives in the initial namespace and is readable by root even
    // where the supervisor at pid 1 is not.
    assert!(all[0].host, "host first: {:?}", all[0]);
    assert_eq!(all[0].inode, stat_inode("/proc/2/ns/net"));
    assert_eq!(all[0].inode, stat_inode(&all[0].path.to_string_lossy()));
    assert!(matches!(all[0].pid, Some(1 | 2)), "{:?}", all[0]);

    let named = |ns: &Netns| {
        let path = format!("{NAMED_DIR}/{}", ns.name);
        let inode = stat_inode(&path);
        assert_eq!(u64::from(inode), ns.inode);
        let found = all
            .iter()
            .find(|n| n.inode == inode)
            .unwrap_or_else(|| panic!("{path} (inode {inode}) not discovered: {all:?}"));
        assert_eq!(found.names, std::slice::from_ref(&ns.name));
        assert_eq!(found.path, Path::new(&path));
        assert!(!found.host);
        found.clone()
    };
    assert_eq!(
        named(&busy).pid,
        Some(sleeper.pid()),
        "the only process in it"
    );
    assert_eq!(named(&empty).pid, None, "no process lives in it");

    let mut inodes: Vec<u32> = all.iter().map(|n| n.inode).collect();
    inodes.sort_unstable();
    inodes.dedup();
    assert_eq!(inodes.len(), all.len(), "one entry per inode");
}

#[test]
fn run_in_enters_only_the_worker_thread() {
    if !require_root("run_in_enters_only_the_worker_thread") {
        return;
    }
    let ns = Netns::new("inv-runin");
    let path = PathBuf::from(format!("{NAMED_DIR}/{}", ns.name));
    let inside = run_in(&path, ns.inode as u32, || {
        Ok(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
    })
    .unwrap();
    assert_eq!(inside, ns.inode);
    let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    assert_ne!(here, ns.inode, "the caller stays where it was");

    let gone = Path::new("/run/netns/listendrop-no-such-namespace");
    let err = run_in(gone, 0, || Ok(())).unwrap_err().to_string();
    assert!(err.contains("cannot open network namespace"), "{err}");
    // The right file under another inode: refused, not entered.
    let err = run_in(&path, ns.inode as u32 + 1, || Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not "), "{err}");
}
