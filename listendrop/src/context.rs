//! What the daemon knows beyond the in-kernel counters, refreshed in the background: the
//! listener inventory (queues, owners, sysctls, kernel counters), the recent drop rate and
//! accept-queue high-water mark of each listener, and what the kernel counted that
//! listendrop could not attribute.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use listendrop_common::{ListenerKey, Reason};

use crate::{
    counters::Snapshot as Counts,
    inventory::{diagnosis::Facts, owners::Owner, NamespaceReport, Snapshot},
    metrics::ListenerLabels,
};

/// The window of [`Context::rate`] and of [`Context::high_water`].
pub const WINDOW: Duration = Duration::from_secs(60);

/// One listener of the inventory, with SO_REUSEPORT members of one address merged (they
/// share their labels).
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Connections waiting for accept(), summed over members.
    pub accept_queue_len: u32,
    /// Accept queue limits, summed over members.
    pub accept_queue_limit: u32,
    /// SYN queue (SYN_RECV requests; shared by members, so not summed).
    pub syn_queue_len: u32,
    /// Socket cookies of the members (keys of the eBPF high-water map).
    pub cookies: Vec<u64>,
    /// The members' owners.
    pub owners: Vec<Owner>,
    /// The diagnosis inputs of the first member, for a new diagnosis once listendrop's
    /// own drop counts are known.
    pub facts: Option<Facts>,
    /// `sk_drops` summed over members (kernel, all reasons, ACK-time overflows twice).
    pub sk_drops: u64,
}

/// Where a namespace's reconciliation starts: the kernel's ListenDrops and listendrop's
/// attributed drops when it was first read, and both at the latest pass.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    kernel: u64,
    ours: u64,
    last: u64,
    last_ours: u64,
}

/// The daemon's view, updated at every inventory pass.
#[derive(Debug, Default)]
pub struct Context {
    /// The latest inventory.
    pub inventory: Arc<Snapshot>,
    /// Its listeners by labels.
    pub rows: BTreeMap<ListenerLabels, Row>,
    /// Namespaces that existed at the first pass (read or not). Those born later start
    /// from zero: listendrop watched them from their birth.
    known_at_start: Option<BTreeSet<u32>>,
    baselines: BTreeMap<u32, Baseline>,
    /// Namespaces that vanished while drops were still counted under their inode: what was
    /// attributed to them. A new namespace given that inode starts from there, so the dead
    /// one's listeners (kept until they expire) are not taken for its own.
    vanished: BTreeMap<u32, u64>,
    /// Unattributed drops per namespace: the largest kernel-minus-ours difference seen.
    /// Counts are read after the kernel counters, so the difference can only lag behind
    /// the truth, never run ahead; its maximum is monotonic as a counter must be.
    unattributed: BTreeMap<u32, u64>,
    /// Drops of listeners whose counters expired, per namespace: still attributed.
    retired: BTreeMap<u32, u64>,
    /// Drops per listener at each pass, oldest first, for [`Context::rate`].
    history: VecDeque<(Instant, BTreeMap<ListenerLabels, u64>)>,
    /// Highest accept queue per socket cookie at each pass (eBPF marks and samples).
    marks: VecDeque<(Instant, HashMap<u64, u32>)>,
}

impl Context {
    /// Takes a new inventory pass, the drop counts read right after it, and the eBPF
    /// high-water marks (socket cookie → length) collected since the previous pass.
    pub fn refresh(
        &mut self,
        inventory: Snapshot,
        counts: &Counts,
        marks: HashMap<u64, u32>,
        now: Instant,
    ) {
        let ours = self.attributed(counts);
        let known = self.known_at_start.get_or_insert_with(|| {
            inventory
                .namespaces
                .iter()
                .map(|n| n.namespace.inode)
                .chain(inventory.skipped.iter().map(|s| s.inode))
                .collect()
        });
        for ns in &inventory.namespaces {
            let inode = ns.namespace.inode;
            let ours = ours.get(&inode).copied().unwrap_or(0);
            let kernel = ns.counters.listen_drops;
            let vanished = &mut self.vanished;
            let base = self.baselines.entry(inode).or_insert_with(|| {
                if let Some(dead) = vanished.remove(&inode) {
                    Baseline {
                        ours: dead,
                        ..Baseline::default()
                    }
                } else if known.contains(&inode) {
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
                self.unattributed.insert(inode, 0);
            }
            base.last = kernel;
            base.last_ours = ours;
            let base = *base;
            let diff = kernel
                .saturating_sub(base.kernel)
                .saturating_sub(ours.saturating_sub(base.ours));
            let max = self.unattributed.entry(inode).or_default();
            *max = (*max).max(diff);
        }
        // Namespaces that are gone take their state with them (inodes are reused).
        let live: BTreeSet<u32> = inventory
            .namespaces
            .iter()
            .map(|n| n.namespace.inode)
            .chain(inventory.skipped.iter().map(|s| s.inode))
            .collect();
        for inode in self.baselines.keys().filter(|i| !live.contains(i)) {
            self.vanished
                .insert(*inode, ours.get(inode).copied().unwrap_or(0));
        }
        self.baselines.retain(|inode, _| live.contains(inode));
        self.unattributed.retain(|inode, _| live.contains(inode));
        // An inode seen again later is a namespace born after listendrop started.
        if let Some(known) = &mut self.known_at_start {
            known.retain(|inode| live.contains(inode));
        }
        // A vanished namespace is forgotten once none of its listeners is counted any more
        // (they expired): a namespace born under its inode then starts from zero.
        let counted: BTreeSet<u32> = counts
            .drops
            .keys()
            .filter(|k| is_drop(k))
            .map(|k| k.netns)
            .collect();
        self.vanished.retain(|inode, _| counted.contains(inode));
        let vanished = &self.vanished;
        self.retired
            .retain(|inode, _| live.contains(inode) || vanished.contains_key(inode));

        self.rows = rows(&inventory.namespaces);
        let mut marks = marks;
        for row in self.rows.values() {
            for cookie in &row.cookies {
                let m = marks.entry(*cookie).or_default();
                *m = (*m).max(row.accept_queue_len);
            }
        }
        self.inventory = Arc::new(inventory);
        push_window(&mut self.history, now, drops_per_listener(counts));
        push_window(&mut self.marks, now, marks);
    }

    /// Notes that the counters of `key` were deleted (expired) with `packets` dropped:
    /// they stay attributed.
    pub fn retire(&mut self, key: &ListenerKey, packets: u64) {
        if is_drop(key) {
            *self.retired.entry(key.netns).or_default() += packets;
        }
    }

    /// Drops per second of a listener over the last minute (or since the daemon started,
    /// if shorter); `None` before two passes.
    pub fn rate(&self, labels: &ListenerLabels) -> Option<f64> {
        let (first_at, first) = self.history.front()?;
        let (last_at, last) = self.history.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        if seconds < 0.5 {
            return None;
        }
        let before = first.get(labels).copied().unwrap_or(0);
        let after = last.get(labels).copied().unwrap_or(0);
        Some(after.saturating_sub(before) as f64 / seconds)
    }

    /// The highest accept queue length of the sockets with `cookies` over the last minute:
    /// the eBPF hooks' observations (every SYN, handshake and drop) and the samples.
    pub fn high_water(&self, cookies: &[u64]) -> u32 {
        self.marks
            .iter()
            .flat_map(|(_, marks)| cookies.iter().filter_map(|c| marks.get(c)))
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Per namespace: drops the kernel counted (ListenDrops) that listendrop did not
    /// attribute to a listener, since listendrop started watching the namespace.
    pub fn unattributed(&self) -> &BTreeMap<u32, u64> {
        &self.unattributed
    }

    /// The owner of the listener with `cookie` in `netns`, else of the listener with
    /// these labels.
    pub fn owner(&self, netns: u32, cookie: u64, labels: &ListenerLabels) -> Option<&Owner> {
        let by_cookie = self
            .inventory
            .namespace(netns)
            .and_then(|ns| {
                ns.listeners
                    .iter()
                    .find(|l| cookie != 0 && l.socket.cookie == cookie)
            })
            .and_then(|l| l.owner.as_ref());
        by_cookie.or_else(|| self.rows.get(labels).and_then(|r| r.owners.first()))
    }

    /// Attributed drops per namespace (live counters plus retired ones).
    fn attributed(&self, counts: &Counts) -> BTreeMap<u32, u64> {
        let mut ours = self.retired.clone();
        for (key, count) in &counts.drops {
            if is_drop(key) {
                *ours.entry(key.netns).or_default() += count.packets;
            }
        }
        ours
    }
}

/// Runs `pass` now and then every `interval` on a thread of its own ("inventory"), for
/// the life of the process.
pub fn spawn(interval: Duration, mut pass: impl FnMut() + Send + 'static) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::thread::Builder::new()
        .name("inventory".into())
        .spawn(move || loop {
            pass();
            std::thread::sleep(interval);
        })
        .context("starting the inventory thread")?;
    Ok(())
}

/// Appends a pass and keeps, as the oldest, the newest pass at least a window old.
fn push_window<T>(window: &mut VecDeque<(Instant, T)>, now: Instant, value: T) {
    window.push_back((now, value));
    while window.len() > 2
        && window
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
    {
        window.pop_front();
    }
}

fn is_drop(key: &ListenerKey) -> bool {
    Reason::from_u32(key.reason).is_some_and(Reason::is_drop)
}

/// Dropped packets per listener (all drop reasons).
fn drops_per_listener(counts: &Counts) -> BTreeMap<ListenerLabels, u64> {
    let mut out = BTreeMap::new();
    for (key, count) in &counts.drops {
        if is_drop(key) {
            *out.entry(ListenerLabels::of(key)).or_default() += count.packets;
        }
    }
    out
}

/// The inventory's listeners by labels, SO_REUSEPORT members merged.
pub fn rows(namespaces: &[NamespaceReport]) -> BTreeMap<ListenerLabels, Row> {
    let mut rows: BTreeMap<ListenerLabels, Row> = BTreeMap::new();
    for ns in namespaces {
        for listener in &ns.listeners {
            let s = &listener.socket;
            let labels = ListenerLabels {
                netns: ns.namespace.inode.to_string(),
                family: s.family.as_str(),
                listen_addr: s.addr.to_string(),
                listen_port: s.port.to_string(),
            };
            let row = rows.entry(labels).or_default();
            row.accept_queue_len += s.accept_queue_len;
            row.accept_queue_limit += s.accept_queue_limit;
            row.syn_queue_len = row.syn_queue_len.max(s.syn_recv);
            row.cookies.push(s.cookie);
            row.sk_drops += u64::from(s.sk_drops.unwrap_or(0));
            row.owners.extend(listener.owner.clone());
            if row.facts.is_none() {
                row.facts = Some(listener.facts(&ns.sysctls));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use listendrop_common::{DropCount, AF_INET};

    use super::*;
    use crate::inventory::{counters::KernelCounters, namespaces::Namespace, sysctls::Sysctls};

    fn counts(netns: u32, port: u16, packets: u64) -> Counts {
        let mut key = ListenerKey::ZERO;
        key.family = AF_INET;
        key.netns = netns;
        key.port = port;
        key.reason = Reason::AckAcceptQueueFull as u32;
        let mut c = Counts::default();
        c.drops.insert(
            key,
            DropCount {
                packets,
                handshakes: 1,
            },
        );
        let mut synack = key;
        synack.reason = Reason::SynackRetransmit as u32;
        c.drops.insert(
            synack,
            DropCount {
                packets: 1000,
                handshakes: 0,
            },
        );
        c
    }

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
                sysctls: Sysctls {
                    somaxconn: 4096,
                    tcp_max_syn_backlog: 512,
                    tcp_abort_on_overflow: 0,
                    tcp_syncookies: 1,
                    tcp_synack_retries: 5,
                },
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

    #[test]
    fn rate_is_over_the_window_and_ignores_non_drops() {
        let mut ctx = Context::default();
        let t0 = Instant::now();
        ctx.refresh(Snapshot::default(), &counts(7, 80, 10), HashMap::new(), t0);
        let labels = ListenerLabels::of(counts(7, 80, 0).drops.keys().next().unwrap());
        assert_eq!(ctx.rate(&labels), None);
        ctx.refresh(
            Snapshot::default(),
            &counts(7, 80, 40),
            HashMap::new(),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(ctx.rate(&labels), Some(3.0));
        // Passes older than the window fall out of it.
        ctx.refresh(
            Snapshot::default(),
            &counts(7, 80, 40),
            HashMap::new(),
            t0 + Duration::from_secs(80),
        );
        assert_eq!(ctx.rate(&labels), Some(0.0));
    }

    #[test]
    fn unattributed_is_monotonic_and_survives_skew_restarts_and_expiry() {
        let t0 = Instant::now();
        let mut ctx = Context::default();
        // Known at start: 100 kernel drops before listendrop, 50 counted by pins adopted
        // from an earlier run. Neither is unattributed.
        ctx.refresh(snapshot(7, 100), &counts(7, 80, 50), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 0);
        // 10 more kernel drops, all attributed, but our read ran ahead by 3: no dip.
        ctx.refresh(snapshot(7, 110), &counts(7, 80, 63), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 0);
        // 5 drops of a class listendrop cannot see.
        ctx.refresh(snapshot(7, 118), &counts(7, 80, 63), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 5);
        // The listener's counters expire: its drops stay attributed.
        ctx.retire(counts(7, 80, 0).drops.keys().next().unwrap(), 63);
        ctx.refresh(snapshot(7, 118), &Counts::default(), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 5);
        // A namespace born later starts from zero.
        let mut born = snapshot(9, 4);
        born.namespaces.extend(snapshot(7, 118).namespaces);
        ctx.refresh(born, &Counts::default(), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&9], 4);
    }

    #[test]
    fn a_namespace_reborn_under_the_same_inode_starts_from_zero() {
        let t0 = Instant::now();
        let mut ctx = Context::default();
        ctx.refresh(snapshot(7, 100), &counts(7, 80, 0), HashMap::new(), t0);
        ctx.refresh(snapshot(7, 130), &counts(7, 80, 20), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 10);
        // Between two passes namespace 7 died and a new one got inode 7: its ListenDrops
        // are 6, 4 of them attributed (listener counts 20 -> 24); the 20 of the dead
        // one's listener (still counted under inode 7 until they expire) are not its own.
        ctx.refresh(snapshot(7, 6), &counts(7, 80, 24), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 2);
        ctx.refresh(snapshot(7, 9), &counts(7, 80, 26), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 3);
    }

    #[test]
    fn a_namespace_reborn_after_a_pass_without_it_starts_from_the_dead_ones_count() {
        let t0 = Instant::now();
        let mut ctx = Context::default();
        ctx.refresh(snapshot(7, 100), &counts(7, 80, 0), HashMap::new(), t0);
        ctx.refresh(snapshot(7, 130), &counts(7, 80, 20), HashMap::new(), t0);
        // A pass without namespace 7; its listener's 20 drops stay counted.
        ctx.refresh(Snapshot::default(), &counts(7, 80, 20), HashMap::new(), t0);
        // A new namespace gets inode 7 with 6 ListenDrops, 4 attributed.
        ctx.refresh(snapshot(7, 6), &counts(7, 80, 24), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 2);
        // Once the dead one's counters are gone, a namespace born under 7 starts from 0.
        ctx.refresh(Snapshot::default(), &Counts::default(), HashMap::new(), t0);
        ctx.refresh(snapshot(7, 5), &Counts::default(), HashMap::new(), t0);
        assert_eq!(ctx.unattributed()[&7], 5);
    }

    #[test]
    fn high_water_is_the_maximum_over_the_window() {
        let t0 = Instant::now();
        let mut ctx = Context::default();
        ctx.refresh(
            Snapshot::default(),
            &Counts::default(),
            HashMap::from([(1, 9), (2, 3)]),
            t0,
        );
        ctx.refresh(
            Snapshot::default(),
            &Counts::default(),
            HashMap::from([(1, 4)]),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(ctx.high_water(&[1]), 9);
        assert_eq!(ctx.high_water(&[1, 2]), 9);
        assert_eq!(ctx.high_water(&[3]), 0);
        ctx.refresh(
            Snapshot::default(),
            &Counts::default(),
            HashMap::new(),
            t0 + Duration::from_secs(100),
        );
        assert_eq!(ctx.high_water(&[1]), 4, "the 9 is older than the window");
    }
}
