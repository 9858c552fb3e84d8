//! Which process holds a socket: `/proc/*/fd` links `socket:[inode]`, scanned with procfs.
//!
//! Scanning every file descriptor of every process is the expensive part of the
//! inventory, so [`OwnerIndex`] keeps the result and scans again only when the set of
//! listening socket inodes changed. A socket handed to another process (fd passing,
//! the original holder exiting) without any listener appearing or closing keeps its old
//! owner until the next change.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use procfs::process::{FDTarget, Process};

use super::containers::{cgroup, ContainerIdentity};

/// The process that holds a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Lowest pid among the holders (the parent of forked workers, usually).
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`, at most 15 bytes).
    pub comm: String,
    /// Its cgroup path (`/proc/PID/cgroup`; the cgroup v2 one when there is one).
    pub cgroup: String,
    /// How many processes hold the socket (forked workers share one listener).
    pub holders: u32,
    /// The container it runs in, `None` for a host process: what its cgroup path says
    /// when it is described, completed by [`crate::inventory::containers::Resolver`] at
    /// each inventory pass (shared by every owner in the same container).
    pub container: Option<Arc<ContainerIdentity>>,
}

/// Socket inode → owner, rebuilt only when the set of wanted inodes changes.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    inodes: BTreeSet<u64>,
    owners: BTreeMap<u64, Owner>,
    scans: u64,
}

impl OwnerIndex {
    /// An empty index; the first [`OwnerIndex::refresh`] scans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the index cover exactly `inodes`, scanning /proc only if they differ from
    /// the last scan's. Returns whether it scanned.
    pub fn refresh(&mut self, inodes: &BTreeSet<u64>) -> bool {
        if self.scans > 0 && *inodes == self.inodes {
            return false;
        }
        self.owners = scan(inodes);
        self.inodes = inodes.clone();
        self.scans += 1;
        true
    }

    /// The owner of socket `inode`, if a process holds it.
    pub fn get(&self, inode: u64) -> Option<&Owner> {
        self.owners.get(&inode)
    }

    /// Every owner, to complete their container identities in place.
    pub fn owners_mut(&mut self) -> impl Iterator<Item = &mut Owner> {
        self.owners.values_mut()
    }

    /// How many times /proc was scanned.
    pub fn scans(&self) -> u64 {
        self.scans
    }
}

/// Walks `/proc/*/fd` once and returns the owner of each of `inodes` that some process
/// holds. Processes that exit or cannot be read meanwhile are skipped.
pub fn scan(inodes: &BTreeSet<u64>) -> BTreeMap<u64, Owner> {
    // inode → pids holding it (a process with several fds of one socket counts once).
    let mut holders: BTreeMap<u64, BTreeSet<i32>> = BTreeMap::new();
    if inodes.is_empty() {
        return BTreeMap::new();
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return BTreeMap::new();
    };
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                if inodes.contains(&inode) {
                    holders.entry(inode).or_default().insert(process.pid());
                }
            }
        }
    }
    holders
        .into_iter()
        .filter_map(|(inode, pids)| {
            // Lowest pid first; if it exited since, the next one.
            let count = u32::try_from(pids.len()).unwrap_or(u32::MAX);
            pids.iter()
                .find_map(|&pid| describe(pid, count))
                .map(|owner| (inode, owner))
        })
        .collect()
}

/// comm, cgroup and container of `pid`, `None` if it is gone.
fn describe(pid: i32, holders: u32) -> Option<Owner> {
    let process = Process::new(pid).ok()?;
    let comm = process.stat().ok()?.comm;
    let cgroups = process.cgroups().map(|c| c.0).unwrap_or_default();
    let container = container_of(&cgroups).map(|c| Arc::new(ContainerIdentity::from_cgroup(&c)));
    Some(Owner {
        pid,
        comm,
        cgroup: pick_cgroup(&cgroups),
        holders,
        container,
    })
}

/// The container the cgroup paths of a process name: the unified hierarchy's first, then
/// each v1 hierarchy's (cgroup v1, hybrid and v2 hosts alike).
pub fn container_of(entries: &[procfs::ProcessCGroup]) -> Option<cgroup::CgroupContainer> {
    let unified = entries.iter().filter(|c| c.hierarchy == 0);
    let v1 = entries.iter().filter(|c| c.hierarchy != 0);
    cgroup::parse_any(unified.chain(v1).map(|c| c.pathname.as_str()))
}

/// The cgroup path to show: the unified (v2, hierarchy 0) one when present, otherwise
/// the first v1 hierarchy's, empty if there is none.
pub fn pick_cgroup(entries: &[procfs::ProcessCGroup]) -> String {
    entries
        .iter()
        .find(|c| c.hierarchy == 0)
        .or_else(|| entries.first())
        .map(|c| c.pathname.clone())
        .unwrap_or_default()
}

/// A process's CPU time at one moment: `utime + stime` from `/proc/PID/stat`, in clock
/// ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    /// `utime + stime`, all threads, in clock ticks (`getconf CLK_TCK`).
    pub ticks: u64,
}

/// Reads `/proc/PID/stat` utime + stime.
pub fn cpu_sample(pid: i32) -> Option<CpuSample> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(CpuSample {
        ticks: stat.utime + stat.stime,
    })
}

/// Share of one CPU at or above which an owner counts as busy.
pub const BUSY_CPU_SHARE: f64 = 0.8;

/// Whether a process was busy between two samples `elapsed` apart: it used at least
/// [`BUSY_CPU_SHARE`] of one CPU. `None` when the interval is empty.
pub fn cpu_busy(
    before: CpuSample,
    after: CpuSample,
    elapsed: Duration,
    ticks_per_second: u64,
) -> Option<bool> {
    if elapsed.is_zero() || ticks_per_second == 0 {
        return None;
    }
    let used = after.ticks.saturating_sub(before.ticks) as f64 / ticks_per_second as f64;
    Some(used / elapsed.as_secs_f64() >= BUSY_CPU_SHARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(hierarchy: u32, controllers: &[&str], path: &str) -> procfs::ProcessCGroup {
        procfs::ProcessCGroup {
            hierarchy,
            controllers: controllers.iter().map(|s| (*s).to_owned()).collect(),
            pathname: path.to_owned(),
        }
    }

    #[test]
    fn pick_cgroup_prefers_v2() {
        let entries = [
            cg(4, &["cpu", "cpuacct"], "/v1"),
            cg(0, &[], "/system.slice/nginx.service"),
        ];
        assert_eq!(pick_cgroup(&entries), "/system.slice/nginx.service");
        assert_eq!(pick_cgroup(&entries[..1]), "/v1");
        assert_eq!(pick_cgroup(&[]), "");
    }

    #[test]
    fn cpu_busy_compares_with_one_cpu() {
        let s = |ticks| CpuSample { ticks };
        let sec = Duration::from_secs(1);
        assert_eq!(cpu_busy(s(100), s(190), sec, 100), Some(true), "90 %");
        assert_eq!(cpu_busy(s(100), s(180), sec, 100), Some(true), "80 %");
        assert_eq!(cpu_busy(s(100), s(110), sec, 100), Some(false), "10 %");
        assert_eq!(
            cpu_busy(s(100), s(500), Duration::from_secs(2), 100),
            Some(true),
            "two cores of a multi-threaded owner"
        );
        assert_eq!(cpu_busy(s(100), s(90), sec, 100), Some(false), "pid reuse");
        assert_eq!(cpu_busy(s(1), s(2), Duration::ZERO, 100), None);
    }

    #[test]
    fn index_scans_only_when_the_inode_set_changes() {
        let mut index = OwnerIndex::new();
        let a = BTreeSet::from([u64::MAX - 1]);
        assert!(index.refresh(&a));
        assert!(!index.refresh(&a));
        assert!(!index.refresh(&a.clone()));
        assert!(index.refresh(&BTreeSet::from([u64::MAX - 2])));
        assert_eq!(index.scans(), 2);
        assert_eq!(index.get(u64::MAX - 2), None, "no such socket");
    }
}
