//! What the daemon knows beyond the in-kernel counters, refreshed in the background: the
//! listener inventory (queues, owners, sysctls, kernel counters), the recent drop rate of
//! each listener, and what the kernel counted that listendrop could not attribute.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use listendrop_common::{ListenerKey, Reason};

use crate::{
    counters::Snapshot as Counts,
    inventory::{owners::Owner, NamespaceReport, Snapshot},
    metrics::ListenerLabels,
};

/// The window of [`Context::rate`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

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
    /// Diagnosis sentences of the inventory.
    pub diagnosis: Vec<String>,
    /// `sk_drops` summed over members (kernel, all reasons, ACK-time overflows twice).
    pub sk_drops: u64,
}

/// The daemon's view, replaced at every inventory pass.
#[derive(Debug, Default)]
pub struct Context {
    /// The latest inventory.
    pub inventory: Arc<Snapshot>,
    /// Its listeners by labels.
    pub rows: BTreeMap<ListenerLabels, Row>,
    /// Namespaces present at start, with their ListenDrops then; namespaces created later
    /// start at 0 (listendrop was watching them from their birth).
    baselines: Option<BTreeMap<u32, u64>>,
    /// Drops per listener at each pass, oldest first, for [`Context::rate`].
    history: VecDeque<(Instant, BTreeMap<ListenerLabels, u64>)>,
}

impl Context {
    /// Takes a new inventory pass and the drop counts read at the same moment.
    pub fn refresh(&mut self, inventory: Snapshot, counts: &Counts, now: Instant) {
        let baselines = self.baselines.get_or_insert_with(|| {
            inventory
                .namespaces
                .iter()
                .map(|ns| (ns.namespace.inode, ns.counters.listen_drops))
                .collect()
        });
        for ns in &inventory.namespaces {
            baselines.entry(ns.namespace.inode).or_insert(0);
        }
        self.rows = rows(&inventory.namespaces);
        self.inventory = Arc::new(inventory);
        self.history.push_back((now, drops_per_listener(counts)));
        // Keep the newest pass at least a window old as the base of the rate.
        while self.history.len() > 2
            && self
                .history
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.history.pop_front();
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

    /// Per namespace: the kernel's ListenDrops since listendrop started minus the drops
    /// listendrop attributed to a listener there (never negative).
    pub fn unattributed(&self, counts: &Counts) -> BTreeMap<u32, u64> {
        let Some(baselines) = &self.baselines else {
            return BTreeMap::new();
        };
        let mut ours: BTreeMap<u32, u64> = BTreeMap::new();
        for (key, count) in &counts.drops {
            if is_drop(key) {
                *ours.entry(key.netns).or_default() += count.packets;
            }
        }
        self.inventory
            .namespaces
            .iter()
            .map(|ns| {
                let inode = ns.namespace.inode;
                let kernel = ns
                    .counters
                    .listen_drops
                    .saturating_sub(baselines.get(&inode).copied().unwrap_or(0));
                (
                    inode,
                    kernel.saturating_sub(ours.get(&inode).copied().unwrap_or(0)),
                )
            })
            .collect()
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
            for line in &listener.diagnosis {
                if !row.diagnosis.contains(line) {
                    row.diagnosis.push(line.clone());
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use listendrop_common::{DropCount, AF_INET};

    use super::*;

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

    #[test]
    fn rate_is_over_the_window_and_ignores_non_drops() {
        let mut ctx = Context::default();
        let t0 = Instant::now();
        ctx.refresh(Snapshot::default(), &counts(7, 80, 10), t0);
        let labels = ListenerLabels::of(counts(7, 80, 0).drops.keys().next().unwrap());
        assert_eq!(ctx.rate(&labels), None);
        ctx.refresh(
            Snapshot::default(),
            &counts(7, 80, 40),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(ctx.rate(&labels), Some(3.0));
        // Passes older than the window fall out of it.
        ctx.refresh(
            Snapshot::default(),
            &counts(7, 80, 40),
            t0 + Duration::from_secs(80),
        );
        assert_eq!(ctx.rate(&labels), Some(0.0));
    }
}
