//! Every network namespace on the host — the host's own (pid 1's, or kthreadd's), the
//! named ones in `/run/netns`, and those of running processes — and a way to run code
//! inside one.
//!
//! A namespace is identified by the inode of its nsfs file, the number `ls -iL
//! /proc/PID/ns/net` prints and the `netns` label of listendrop's metrics. Namespaces that
//! are neither named nor used by a process (held only by an open file descriptor or a
//! socket) cannot be found from /proc and are not listed.

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use super::InventoryError;

/// Where named namespaces live (`ip netns add NAME` bind-mounts them there).
pub const NAMED_DIR: &str = "/run/netns";

/// One network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// nsfs inode number: `ls -iL /proc/PID/ns/net`, `stat -L -c %i /run/netns/NAME`.
    pub inode: u32,
    /// A file that enters it with `setns(CLONE_NEWNET)`: `/run/netns/NAME` when it has a
    /// name (it outlives processes), otherwise `/proc/PID/ns/net`.
    pub path: PathBuf,
    /// Its names under `/run/netns` (sorted; empty for unnamed namespaces).
    pub names: Vec<String>,
    /// The lowest pid of a process living in it, if any.
    pub pid: Option<i32>,
    /// Whether this is the host's (initial) namespace, pid 1's and the kernel threads'.
    pub host: bool,
}

/// Lists every network namespace: the host's first, then the others by inode.
///
/// The host's namespace is pid 1's; when pid 1 cannot be read (a supervisor that holds
/// capabilities this process lacks makes `/proc/1/ns` unreadable even to root), kthreadd's
/// (pid 2): kernel threads always live in the initial namespaces. Other processes that
/// exit or cannot be read while /proc is walked are skipped.
pub fn discover() -> Result<Vec<Namespace>, InventoryError> {
    let host = [1, 2]
        .into_iter()
        .find_map(|pid| net_inode(pid).ok().map(|inode| (pid, inode)))
        .ok_or_else(|| InventoryError::Format {
            what: "/proc/1/ns/net and /proc/2/ns/net: neither is readable, so the host's \
                   network namespace is unknown (run listendrop as root in the host's PID \
                   namespace)"
                .into(),
        })?;
    let processes = procfs::process::all_processes().map_err(|source| InventoryError::Proc {
        what: "/proc".into(),
        source,
    })?;
    let mut members = Vec::new();
    for process in processes.flatten() {
        // Processes of other users (as non-root) or better-privileged ones fail with
        // EACCES; processes that exit meanwhile with ENOENT. Neither is an error here.
        if let Ok(ns) = process.namespaces() {
            if let Some(net) = ns.0.get(std::ffi::OsStr::new("net")) {
                if let Ok(inode) = u32::try_from(net.identifier) {
                    members.push((process.pid(), inode));
                }
            }
        }
    }
    Ok(merge(host, &named()?, &members))
}

/// The named namespaces, `(name, inode)`; none when `/run/netns` does not exist.
fn named() -> Result<Vec<(String, u32)>, InventoryError> {
    let dir = match std::fs::read_dir(NAMED_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(InventoryError::Io {
                what: format!("list {NAMED_DIR}"),
                source,
            })
        }
    };
    let mut named = Vec::new();
    for entry in dir.flatten() {
        // Skip names that are no namespace handle: `ip netns del` racing us leaves an
        // empty placeholder file on tmpfs once the bind mount is gone.
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !is_nsfs(&path) {
            continue;
        }
        if let (Some(name), Ok(inode)) = (
            entry.file_name().to_str().map(str::to_owned),
            u32::try_from(meta.ino()),
        ) {
            named.push((name, inode));
        }
    }
    Ok(named)
}

/// Whether `path` (followed) lives on nsfs, i.e. is a namespace handle and not the empty
/// placeholder file `ip netns add` leaves when the bind mount is gone.
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The network namespace inode of process `pid`.
pub fn net_inode(pid: i32) -> procfs::ProcResult<u32> {
    let ns = procfs::process::Process::new(pid)?.namespaces()?;
    let net = ns.0.get(std::ffi::OsStr::new("net")).ok_or_else(|| {
        procfs::ProcError::NotFound(Some(PathBuf::from(format!("/proc/{pid}/ns/net"))))
    })?;
    u32::try_from(net.identifier).map_err(|_| {
        procfs::ProcError::Other(format!(
            "namespace inode {} does not fit in 32 bits",
            net.identifier
        ))
    })
}

/// Merges the three sources into one entry per inode: the host's (`host` is a pid known
/// to live in it and the inode) first, then the others in inode order. A named namespace
/// is entered through its first name, an unnamed one through its lowest pid.
pub fn merge(host: (i32, u32), named: &[(String, u32)], members: &[(i32, u32)]) -> Vec<Namespace> {
    let (host_pid, host) = host;
    let mut names: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (name, inode) in named {
        names.entry(*inode).or_default().push(name.clone());
    }
    let mut pids: BTreeMap<u32, i32> = BTreeMap::new();
    for &(pid, inode) in members.iter().chain([&(host_pid, host)]) {
        pids.entry(inode)
            .and_modify(|p| *p = (*p).min(pid))
            .or_insert(pid);
    }
    let mut inodes: Vec<u32> = names.keys().chain(pids.keys()).copied().collect();
    inodes.sort_unstable_by_key(|&i| (i != host, i));
    inodes.dedup();
    inodes
        .into_iter()
        .filter_map(|inode| {
            let mut names = names.remove(&inode).unwrap_or_default();
            names.sort();
            let pid = pids.get(&inode).copied();
            let path = match (names.first(), pid) {
                (Some(name), _) => Path::new(NAMED_DIR).join(name),
                (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
                (None, None) => return None,
            };
            Some(Namespace {
                inode,
                path,
                names,
                pid,
                host: inode == host,
            })
        })
        .collect()
}

/// Runs `f` on a new thread that has entered the network namespace at `path` with
/// `setns(CLONE_NEWNET)`, and returns its result. Sockets it opens, `/proc/sys/net` and
/// `/proc/thread-self/net` all belong to that namespace; the calling thread is untouched.
/// `expected` is the namespace's inode: a `/proc/PID/ns/net` whose process exited and
/// whose pid was reused since discovery names another namespace, and is refused.
pub fn run_in<R: Send>(
    path: &Path,
    expected: u32,
    f: impl FnOnce() -> Result<R, InventoryError> + Send,
) -> Result<R, InventoryError> {
    use std::os::unix::fs::MetadataExt as _;
    let file = File::open(path).map_err(|source| InventoryError::OpenNamespace {
        path: path.to_owned(),
        source,
    })?;
    let inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
    if inode != u64::from(expected) {
        return Err(InventoryError::OpenNamespace {
            path: path.to_owned(),
            source: std::io::Error::other(format!(
                "it is namespace {inode} now, not {expected} (the process exited)"
            )),
        });
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    InventoryError::EnterNamespace {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                f()
            })
            .map_err(|source| InventoryError::Io {
                what: "spawn a thread to enter a network namespace".into(),
                source,
            })?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_puts_host_first_and_dedups_by_inode() {
        let named = [
            ("b".to_owned(), 7),
            ("a".to_owned(), 7),
            ("c".to_owned(), 9),
        ];
        let members = [(1, 5), (300, 7), (200, 7), (400, 11), (2, 5)];
        let all = merge((1, 5), &named, &members);
        let inodes: Vec<u32> = all.iter().map(|n| n.inode).collect();
        assert_eq!(inodes, [5, 7, 9, 11]);
        assert_eq!(
            all[0],
            Namespace {
                inode: 5,
                path: "/proc/1/ns/net".into(),
                names: vec![],
                pid: Some(1),
                host: true
            }
        );
        assert_eq!(all[1].names, ["a", "b"]);
        assert_eq!(all[1].path, Path::new("/run/netns/a"));
        assert_eq!(all[1].pid, Some(200), "lowest pid");
        assert_eq!(all[2].pid, None, "named, no process");
        assert_eq!(all[2].path, Path::new("/run/netns/c"));
        assert_eq!(all[3].path, Path::new("/proc/400/ns/net"));
        assert!(!all[3].host);
    }

    #[test]
    fn merge_keeps_host_even_if_its_pid_was_not_listed() {
        let all = merge((2, 5), &[], &[(7, 5)]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].pid, Some(2), "lowest pid");
        assert_eq!(all[0].path, Path::new("/proc/2/ns/net"));
        assert!(all[0].host);
    }

    #[test]
    fn named_host_namespace_is_still_the_host() {
        let all = merge((1, 5), &[("host".into(), 5)], &[(1, 5)]);
        assert_eq!(all.len(), 1);
        assert!(all[0].host);
        assert_eq!(all[0].path, Path::new("/run/netns/host"));
    }
}
