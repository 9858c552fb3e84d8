//! The listener inventory (issue 4, "who is dropping"): every TCP listening socket of
//! every network namespace, with its queues, its owner process, its namespace's sysctls
//! and kernel counters, and a diagnosis — all without eBPF, from sock_diag and /proc.
//!
//! [`Inventory::collect`] builds a [`Snapshot`]. Each namespace is read on a thread that
//! entered it ([`namespaces::run_in`]); a namespace that vanishes or cannot be read is
//! logged and listed in [`Snapshot::skipped`], never fatal. Owners come from an
//! [`owners::OwnerIndex`] that rescans /proc only when the set of listeners changed; the
//! container and pod of each owner from a [`containers::Resolver`] that asks its sources
//! once per container.

pub mod containers;
pub mod counters;
pub mod diagnosis;
pub mod namespaces;
pub mod owners;
pub mod sockdiag;
pub mod sysctls;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Instant,
};

use counters::KernelCounters;
use diagnosis::Facts;
use namespaces::Namespace;
use owners::{CpuSample, Owner, OwnerIndex};
use sockdiag::ListenSocket;
use sysctls::Sysctls;

/// Why part of the inventory could not be read. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A /proc file or directory could not be read through procfs.
    #[error("cannot read {what}: {source}")]
    Proc {
        /// What was read.
        what: String,
        /// What procfs said.
        source: procfs::ProcError,
    },
    /// A plain I/O operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was attempted, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A kernel file did not have the expected format.
    #[error("unexpected content in {what}")]
    Format {
        /// The file and what was wrong.
        what: String,
    },
    /// The namespace file could not be opened (the namespace or its process is gone).
    #[error(
        "cannot open network namespace {path}: {source} (it vanished, or opening another \
         process's namespace needs root)"
    )]
    OpenNamespace {
        /// `/run/netns/NAME` or `/proc/PID/ns/net`.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `setns(CLONE_NEWNET)` failed.
    #[error(
        "cannot enter network namespace {path}: {source}: setns(CLONE_NEWNET) needs \
         CAP_SYS_ADMIN: run listendrop as root"
    )]
    EnterNamespace {
        /// The namespace file.
        path: PathBuf,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// A NETLINK_SOCK_DIAG operation failed.
    #[error(
        "sock_diag: cannot {what}: {source} (sock_diag needs CAP_NET_ADMIN for other \
         namespaces' sockets: run listendrop as root)"
    )]
    SockDiag {
        /// The step that failed.
        what: &'static str,
        /// The OS error (or the kernel's netlink error).
        source: std::io::Error,
    },
    /// The kernel has no sock_diag handler for TCP.
    #[error(
        "sock_diag: this kernel has no TCP handler loaded (CONFIG_INET_TCP_DIAG=m and the \
         module is not loaded): run `modprobe tcp_diag`"
    )]
    SockDiagModule,
    /// The kernel's sock_diag answer could not be decoded.
    #[error(
        "sock_diag: cannot decode the kernel's answer: {source} (a kernel newer than \
         netlink-packet-sock-diag knows? please report it)"
    )]
    SockDiagDecode {
        /// The decoder's error.
        source: netlink_packet_core::DecodeError,
    },
}

/// One listener with everything known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// What sock_diag says: address, queues, `sk_drops`, SYN queue.
    pub socket: ListenSocket,
    /// The process holding it; `None` if no process does (e.g. kept by a process in
    /// another PID namespace that /proc does not show, or closed meanwhile).
    pub owner: Option<Owner>,
    /// Whether the owner used most of a CPU since the previous collect; `None` on the
    /// first look at that process.
    pub owner_busy: Option<bool>,
    /// `sk_drops` since the previous collect (all of them on the first look).
    pub new_sk_drops: u64,
    /// [`diagnosis::diagnose`] of [`Listener::facts`] (no per-reason drops: those come
    /// from the eBPF side).
    pub diagnosis: Vec<String>,
}

impl Listener {
    /// The diagnosis inputs known to the inventory; add listendrop's per-reason drop
    /// counts to `drops` and call [`diagnosis::diagnose`] again for a fuller picture.
    pub fn facts(&self, sysctls: &Sysctls) -> Facts {
        Facts {
            accept_queue_limit: self.socket.accept_queue_limit,
            accept_queue_len: self.socket.accept_queue_len,
            syn_recv: self.socket.syn_recv,
            sk_drops: self.new_sk_drops,
            owner_busy: self.owner_busy,
            ..namespace_facts(sysctls)
        }
    }
}

/// The diagnosis inputs every listener of a namespace shares: its sysctls.
pub fn namespace_facts(sysctls: &Sysctls) -> Facts {
    Facts {
        somaxconn: sysctls.somaxconn,
        syncookies: sysctls.tcp_syncookies,
        abort_on_overflow: sysctls.tcp_abort_on_overflow,
        max_syn_backlog: sysctls.tcp_max_syn_backlog,
        synack_retries: sysctls.tcp_synack_retries,
        drops: BTreeMap::new(),
        ..Facts::default()
    }
}

/// One network namespace's part of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceReport {
    /// Which namespace.
    pub namespace: Namespace,
    /// Its listen-related sysctls.
    pub sysctls: Sysctls,
    /// Its kernel counters (absolute).
    pub counters: KernelCounters,
    /// Its TCP listeners, IPv4 first.
    pub listeners: Vec<Listener>,
    /// SYN_RECV entries that matched no listener.
    pub unattributed_syn_recv: u32,
}

/// A namespace that could not be read during a collect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its inode (0 when the namespaces could not be listed at all).
    pub inode: u32,
    /// Why, with the fix.
    pub error: String,
}

/// Everything one [`Inventory::collect`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every readable namespace, the host's first.
    pub namespaces: Vec<NamespaceReport>,
    /// Namespaces that vanished or failed while being read.
    pub skipped: Vec<Skipped>,
}

impl Snapshot {
    /// The report of namespace `inode`, if it was read.
    pub fn namespace(&self, inode: u32) -> Option<&NamespaceReport> {
        self.namespaces.iter().find(|n| n.namespace.inode == inode)
    }
}

/// Collects [`Snapshot`]s, keeping what makes the next one cheaper or richer: the owner
/// index, the container identities, the owners' last CPU samples and the listeners' last
/// `sk_drops`.
#[derive(Debug)]
pub struct Inventory {
    owners: OwnerIndex,
    /// `None`: owners keep what their cgroup says (for comparisons).
    containers: Option<containers::Resolver>,
    cpu: BTreeMap<i32, (CpuSample, Instant)>,
    sk_drops: BTreeMap<u64, u32>,
    ticks_per_second: u64,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new()
    }
}

impl Inventory {
    /// An inventory with nothing seen yet, asking the default container sources.
    pub fn new() -> Self {
        Self::with_containers(containers::Config::default())
    }

    /// An inventory with nothing seen yet, asking the container sources of `config`.
    pub fn with_containers(config: containers::Config) -> Self {
        Self {
            containers: Some(containers::Resolver::new(config)),
            ..Self::without_containers()
        }
    }

    /// An inventory that asks no container source (an owner's container is what its
    /// cgroup path says): the baseline of the benchmarks.
    pub fn without_containers() -> Self {
        Self {
            owners: OwnerIndex::new(),
            containers: None,
            cpu: BTreeMap::new(),
            sk_drops: BTreeMap::new(),
            ticks_per_second: procfs::ticks_per_second(),
        }
    }

    /// How many times the owner index scanned /proc.
    pub fn owner_scans(&self) -> u64 {
        self.owners.scans()
    }

    /// How many containers' identities are cached.
    pub fn cached_containers(&self) -> usize {
        self.containers
            .as_ref()
            .map_or(0, containers::Resolver::cached)
    }

    /// Reads every namespace now. Failures of single namespaces are logged and listed in
    /// [`Snapshot::skipped`]; a failure to list namespaces at all gives an empty snapshot
    /// whose only skipped entry has inode 0.
    pub fn collect(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let namespaces = match namespaces::discover() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("listener inventory: {e}");
                snapshot.skipped.push(Skipped {
                    inode: 0,
                    error: e.to_string(),
                });
                return snapshot;
            }
        };
        let found = read_all(namespaces, &mut snapshot.skipped);
        let inodes: BTreeSet<u64> = found
            .iter()
            .flat_map(|n| n.sockets.listeners.iter().map(|l| l.inode))
            .filter(|&i| i != 0)
            .collect();
        self.owners.refresh(&inodes);
        if let Some(resolver) = &mut self.containers {
            resolver.annotate(self.owners.owners_mut());
        }
        let mut pass = Pass {
            now: Instant::now(),
            cpu: BTreeMap::new(),
            sk_drops: BTreeMap::new(),
        };
        for n in found {
            let listeners = n
                .sockets
                .listeners
                .into_iter()
                .map(|socket| self.listener(socket, &n.sysctls, &mut pass))
                .collect();
            snapshot.namespaces.push(NamespaceReport {
                namespace: n.namespace,
                sysctls: n.sysctls,
                counters: n.counters,
                listeners,
                unattributed_syn_recv: n.sockets.unattributed_syn_recv,
            });
        }
        self.cpu = pass
            .cpu
            .into_iter()
            .filter_map(|(pid, s)| Some((pid, s?)))
            .collect();
        self.sk_drops = pass.sk_drops;
        snapshot
    }

    /// One listener of this pass: its owner (and how busy it was since the last pass), the
    /// drops its socket counted since then, and the diagnosis.
    fn listener(
        &self,
        socket: sockdiag::ListenSocket,
        sysctls: &Sysctls,
        pass: &mut Pass,
    ) -> Listener {
        let owner = self.owners.get(socket.inode).cloned();
        let owner_busy = owner.as_ref().and_then(|o| {
            let now = pass.now;
            let sample = *pass
                .cpu
                .entry(o.pid)
                .or_insert_with(|| owners::cpu_sample(o.pid).map(|s| (s, now)))
                .as_ref()?;
            let (before, at) = self.cpu.get(&o.pid)?;
            owners::cpu_busy(*before, sample.0, sample.1 - *at, self.ticks_per_second)
        });
        let drops = socket.sk_drops.unwrap_or(0);
        let new_sk_drops = u64::from(
            drops.saturating_sub(self.sk_drops.get(&socket.cookie).copied().unwrap_or(0)),
        );
        pass.sk_drops.insert(socket.cookie, drops);
        let mut listener = Listener {
            socket,
            owner,
            owner_busy,
            new_sk_drops,
            diagnosis: Vec::new(),
        };
        listener.diagnosis = diagnosis::diagnose(&listener.facts(sysctls));
        listener
    }
}

/// What one pass samples as it goes: owners' CPU time and sockets' drop counts, for the
/// next pass to take differences from.
struct Pass {
    now: Instant,
    cpu: BTreeMap<i32, Option<(CpuSample, Instant)>>,
    sk_drops: BTreeMap<u64, u32>,
}

/// One namespace as read.
struct Found {
    namespace: Namespace,
    sockets: sockdiag::Sockets,
    sysctls: Sysctls,
    counters: KernelCounters,
}

/// Reads every namespace of `namespaces`; the ones that fail are logged and added to
/// `skipped`.
fn read_all(namespaces: Vec<Namespace>, skipped: &mut Vec<Skipped>) -> Vec<Found> {
    let mut found = Vec::new();
    for ns in namespaces {
        match read_namespace(&ns) {
            Ok((sockets, sysctls, counters)) => found.push(Found {
                namespace: ns,
                sockets,
                sysctls,
                counters,
            }),
            Err(e) => {
                tracing::warn!(
                    netns = ns.inode,
                    path = %ns.path.display(),
                    "listener inventory skips a namespace: {e}"
                );
                skipped.push(Skipped {
                    inode: ns.inode,
                    error: e.to_string(),
                });
            }
        }
    }
    found
}

/// Reads one namespace: sock_diag and sysctls on a thread inside it, counters through a
/// process living in it (or on that thread when none does, or it exited or moved to
/// another namespace since discovery).
fn read_namespace(
    ns: &Namespace,
) -> Result<(sockdiag::Sockets, Sysctls, KernelCounters), InventoryError> {
    let by_pid = ns.pid.and_then(|pid| {
        let counters = counters::read_for_pid(pid).ok()?;
        (namespaces::net_inode(pid).ok()? == ns.inode).then_some(counters)
    });
    namespaces::run_in(&ns.path, ns.inode, || {
        let counters = match by_pid {
            Some(c) => c,
            None => counters::read_current_thread()?,
        };
        Ok((sockdiag::dump()?, sysctls::read()?, counters))
    })
}
