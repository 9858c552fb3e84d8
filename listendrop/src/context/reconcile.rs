//! Per network namespace: what the kernel counted (ListenDrops) that listendrop did not
//! attribute to a listener, since listendrop started watching the namespace — robust to
//! counters adopted from pins, to listeners whose counters expired, and to the kernel
//! handing a dead namespace's inode to a new one.

use std::collections::{BTreeMap, BTreeSet};

use crate::{inventory::Snapshot, listener::Netns};

/// Where a namespace's reconciliation starts: the kernel's ListenDrops and listendrop's
/// attributed drops when it was first read, and both at the latest pass.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    kernel: u64,
    ours: u64,
    last: u64,
    last_ours: u64,
}

/// The reconciliation state.
#[derive(Debug, Default)]
pub struct Reconciler {
    /// Namespaces that existed at the first pass (read or not). Those born later start
    /// from zero: listendrop watched them from their birth.
    known_at_start: Option<BTreeSet<Netns>>,
    baselines: BTreeMap<Netns, Baseline>,
    /// Namespaces that vanished while drops were still counted under their inode: what was
    /// attributed to them. A new namespace given that inode starts from there, so the dead
    /// one's listeners (kept until they expire) are not taken for its own.
    vanished: BTreeMap<Netns, u64>,
    /// Unattributed drops per namespace: the largest kernel-minus-ours difference seen.
    /// Counts are read after the kernel counters, so the difference can only lag behind
    /// the truth, never run ahead; its maximum is monotonic as a counter must be.
    unattributed: BTreeMap<Netns, u64>,
    /// Drops of listeners whose counters expired, per namespace: still attributed.
    retired: BTreeMap<Netns, u64>,
}

impl Reconciler {
    /// Takes a pass: `inventory` (the kernel's counters of each namespace), listendrop's
    /// dropped packets per namespace read right after it (`counted`, live counters only).
    pub fn update(&mut self, inventory: &Snapshot, counted: &BTreeMap<Netns, u64>) {
        let ours = self.attributed(counted);
        let live: BTreeSet<Netns> = inventory
            .namespaces
            .iter()
            .map(|n| Netns(n.namespace.inode))
            .chain(inventory.skipped.iter().map(|s| Netns(s.inode)))
            .collect();
        let known = self.known_at_start.get_or_insert_with(|| live.clone());
        for ns in &inventory.namespaces {
            let netns = Netns(ns.namespace.inode);
            let ours = ours.get(&netns).copied().unwrap_or(0);
            let kernel = ns.counters.listen_drops;
            let vanished = &mut self.vanished;
            let base = self.baselines.entry(netns).or_insert_with(|| {
                if let Some(dead) = vanished.remove(&netns) {
                    Baseline {
                        ours: dead,
                        ..Baseline::default()
                    }
                } else if known.contains(&netns) {
                    Baseline {
                        kernel,
                        ours,
                        last: kernel,
                        last_ours: ours,
                    }
                } else {
                    Baseline::default()
                }
            });
            if kernel < base.last {
                // The kernel's counter went backwards: the namespace died and a new one
                // got its inode between two passes (inodes are reused at once). The new
                // one starts from zero, and from what was attributed at the previous pass
                // (what the dead one's listeners count is not its own; drops of either
                // since then are taken as attributed, so the figure lags, never leads).
                // The exported counter resets with it.
                *base = Baseline {
                    kernel: 0,
                    ours: base.last_ours,
                    ..Baseline::default()
                };
                self.unattributed.insert(netns, 0);
            }
            base.last = kernel;
            base.last_ours = ours;
            let base = *base;
            let diff = kernel
                .saturating_sub(base.kernel)
                .saturating_sub(ours.saturating_sub(base.ours));
            let max = self.unattributed.entry(netns).or_default();
            *max = (*max).max(diff);
        }
        // Namespaces that are gone take their state with them (inodes are reused).
        for netns in self.baselines.keys().filter(|n| !live.contains(n)) {
            self.vanished
                .insert(*netns, ours.get(netns).copied().unwrap_or(0));
        }
        self.baselines.retain(|netns, _| live.contains(netns));
        self.unattributed.retain(|netns, _| live.contains(netns));
        // An inode seen again later is a namespace born after listendrop started.
        if let Some(known) = &mut self.known_at_start {
            known.retain(|netns| live.contains(netns));
        }
        // A vanished namespace is forgotten once none of its listeners is counted any more
        // (they expired): a namespace born under its inode then starts from zero.
        self.vanished.retain(|netns, _| counted.contains_key(netns));
        let vanished = &self.vanished;
        self.retired
            .retain(|netns, _| live.contains(netns) || vanished.contains_key(netns));
    }

    /// Notes that a listener's counters in `netns` were deleted (expired) with `packets`
    /// dropped: they stay attributed.
    pub fn retire(&mut self, netns: Netns, packets: u64) {
        *self.retired.entry(netns).or_default() += packets;
    }

    /// Per namespace: drops the kernel counted (ListenDrops) that listendrop did not
    /// attribute to a listener, since listendrop started watching the namespace.
    pub fn unattributed(&self) -> &BTreeMap<Netns, u64> {
        &self.unattributed
    }

    /// Attributed drops per namespace (live counters plus retired ones).
    fn attributed(&self, counted: &BTreeMap<Netns, u64>) -> BTreeMap<Netns, u64> {
        let mut ours = self.retired.clone();
        for (netns, packets) in counted {
            *ours.entry(*netns).or_default() += packets;
        }
        ours
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{
        counters::KernelCounters, namespaces::Namespace, sysctls::Sysctls, NamespaceReport,
    };

    const NS: Netns = Netns(7);

    fn snapshot(netns: u32, listen_drops: u64) -> Snapshot {
        Snapshot {
            namespaces: vec![NamespaceReport {
                namespace: Namespace {
                    inode: netns,
                    path: "/proc/1/ns/net".into(),
                    names: Vec::new(),
                    pid: Some(1),
                    host: true,
                },
                sysctls: Sysctls::default(),
                counters: KernelCounters {
                    listen_drops,
                    ..KernelCounters::default()
                },
                listeners: Vec::new(),
                unattributed_syn_recv: 0,
            }],
            skipped: Vec::new(),
        }
    }

    fn counted(netns: u32, packets: u64) -> BTreeMap<Netns, u64> {
        BTreeMap::from([(Netns(netns), packets)])
    }

    #[test]
    fn unattributed_is_monotonic_and_survives_skew_restarts_and_expiry() {
        let mut r = Reconciler::default();
        // Known at start: 100 kernel drops before listendrop, 50 counted by pins adopted
        // from an earlier run. Neither is unattributed.
        r.update(&snapshot(7, 100), &counted(7, 50));
        assert_eq!(r.unattributed()[&NS], 0);
        // 10 more kernel drops, all attributed, but our read ran ahead by 3: no dip.
        r.update(&snapshot(7, 110), &counted(7, 63));
        assert_eq!(r.unattributed()[&NS], 0);
        // 5 drops of a class listendrop cannot see.
        r.update(&snapshot(7, 118), &counted(7, 63));
        assert_eq!(r.unattributed()[&NS], 5);
        // The listener's counters expire: its drops stay attributed.
        r.retire(NS, 63);
        r.update(&snapshot(7, 118), &BTreeMap::new());
        assert_eq!(r.unattributed()[&NS], 5);
        // A namespace born later starts from zero.
        let mut born = snapshot(9, 4);
        born.namespaces.extend(snapshot(7, 118).namespaces);
        r.update(&born, &BTreeMap::new());
        assert_eq!(r.unattributed()[&Netns(9)], 4);
    }

    #[test]
    fn a_namespace_reborn_under_the_same_inode_starts_from_zero() {
        let mut r = Reconciler::default();
        r.update(&snapshot(7, 100), &counted(7, 0));
        r.update(&snapshot(7, 130), &counted(7, 20));
        assert_eq!(r.unattributed()[&NS], 10);
        // Between two passes namespace 7 died and a new one got inode 7: its ListenDrops
        // are 6, 4 of them attributed (listener counts 20 -> 24); the 20 of the dead
        // one's listener (still counted under inode 7 until they expire) are not its own.
        r.update(&snapshot(7, 6), &counted(7, 24));
        assert_eq!(r.unattributed()[&NS], 2);
        r.update(&snapshot(7, 9), &counted(7, 26));
        assert_eq!(r.unattributed()[&NS], 3);
    }

    #[test]
    fn a_namespace_reborn_after_a_pass_without_it_starts_from_the_dead_ones_count() {
        let mut r = Reconciler::default();
        r.update(&snapshot(7, 100), &counted(7, 0));
        r.update(&snapshot(7, 130), &counted(7, 20));
        // A pass without namespace 7; its listener's 20 drops stay counted.
        r.update(&Snapshot::default(), &counted(7, 20));
        // A new namespace gets inode 7 with 6 ListenDrops, 4 attributed.
        r.update(&snapshot(7, 6), &counted(7, 24));
        assert_eq!(r.unattributed()[&NS], 2);
        // Once the dead one's counters are gone, a namespace born under 7 starts from 0.
        r.update(&Snapshot::default(), &BTreeMap::new());
        r.update(&snapshot(7, 5), &BTreeMap::new());
        assert_eq!(r.unattributed()[&NS], 5);
    }
}
