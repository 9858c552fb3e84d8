//! What the daemon knows beyond the in-kernel counters, refreshed at every inventory pass:
//! the inventory by listener ([`view`]), the recent drop rate and accept-queue high-water
//! marks ([`window`]), and what the kernel counted that listendrop could not attribute
//! ([`reconcile`]).

pub mod reconcile;
pub mod view;
pub mod window;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use reconcile::Reconciler;
use view::View;
use window::Window;

use crate::{
    counters,
    inventory::Snapshot,
    listener::{ListenerId, Netns},
    metrics::kernel::NamespaceTotals,
};

/// The daemon's view, updated at every inventory pass.
#[derive(Debug, Default)]
pub struct Context {
    /// The latest inventory, by listener.
    pub view: Arc<View>,
    reconcile: Reconciler,
    /// Drops per listener at each pass, for [`Context::rate`].
    history: Window<BTreeMap<ListenerId, u64>>,
    /// Highest accept queue per socket cookie at each pass (eBPF marks and samples).
    marks: Window<HashMap<u64, u32>>,
}

impl Context {
    /// Takes a new inventory pass, the counters read right after it, and the eBPF
    /// high-water marks (socket cookie → length) collected since the previous pass.
    pub fn refresh(
        &mut self,
        inventory: Snapshot,
        counts: &counters::Snapshot,
        mut marks: HashMap<u64, u32>,
        now: Instant,
    ) {
        let drops = counts.drops_per_listener();
        let mut per_netns: BTreeMap<Netns, u64> = BTreeMap::new();
        for (id, listener) in &counts.listeners {
            if listener.keys().any(|r| r.is_drop()) {
                *per_netns.entry(id.netns).or_default() += drops[id];
            }
        }
        self.reconcile.update(&inventory, &per_netns);
        let view = View::new(Arc::new(inventory));
        for member in view.listeners.values().flat_map(|g| &g.members) {
            let mark = marks.entry(member.socket.cookie).or_default();
            *mark = (*mark).max(member.socket.accept_queue_len);
        }
        self.view = Arc::new(view);
        self.history.push(now, drops);
        self.marks.push(now, marks);
    }

    /// Notes that the counters of `id` were deleted (expired) with `packets` dropped:
    /// they stay attributed.
    pub fn retire(&mut self, id: &ListenerId, packets: u64) {
        self.reconcile.retire(id.netns, packets);
    }

    /// Drops per second of a listener over the last minute (or since the daemon started,
    /// if shorter); `None` before two passes half a second apart.
    pub fn rate(&self, id: &ListenerId) -> Option<f64> {
        let (first, last, span) = self.history.span()?;
        let seconds = span.as_secs_f64();
        if seconds < 0.5 {
            return None;
        }
        let before = first.get(id).copied().unwrap_or(0);
        let after = last.get(id).copied().unwrap_or(0);
        Some(after.saturating_sub(before) as f64 / seconds)
    }

    /// The highest accept queue length of the socket `cookie` over the last minute: the
    /// eBPF hooks' observations (SYNs, handshakes, drops) and the samples.
    pub fn high_water(&self, cookie: u64) -> u32 {
        self.marks
            .values()
            .filter_map(|marks| marks.get(&cookie))
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Per namespace read by the latest pass: its netstat counters and unattributed drops.
    pub fn totals(&self) -> Vec<NamespaceTotals> {
        let unattributed = self.reconcile.unattributed();
        self.view
            .inventory
            .namespaces
            .iter()
            .map(|ns| {
                let netns = Netns(ns.namespace.inode);
                NamespaceTotals {
                    netns,
                    netstat: ns.counters,
                    unattributed: unattributed.get(&netns).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use listendrop_common::{DropCount, Reason};

    use super::*;

    fn id(port: u16) -> ListenerId {
        ListenerId {
            netns: Netns(7),
            addr: "127.0.0.1".parse().unwrap(),
            port,
        }
    }

    fn counts(port: u16, packets: u64) -> counters::Snapshot {
        let mut c = counters::Snapshot::default();
        let listener = c.listeners.entry(id(port)).or_default();
        listener.insert(
            Reason::AckAcceptQueueFull,
            DropCount {
                packets,
                handshakes: 1,
                ..DropCount::default()
            },
        );
        listener.insert(
            Reason::SynackRetransmit,
            DropCount {
                packets: 1000,
                handshakes: 0,
                ..DropCount::default()
            },
        );
        c
    }

    #[test]
    fn rate_is_over_the_window_and_ignores_non_drops() {
        let mut ctx = Context::default();
        let t0 = Instant::now();
        let refresh = |ctx: &mut Context, packets, at| {
            ctx.refresh(
                Snapshot::default(),
                &counts(80, packets),
                HashMap::new(),
                at,
            );
        };
        refresh(&mut ctx, 10, t0);
        assert_eq!(ctx.rate(&id(80)), None);
        refresh(&mut ctx, 40, t0 + Duration::from_secs(10));
        assert_eq!(ctx.rate(&id(80)), Some(3.0));
        // Passes older than the window fall out of it.
        refresh(&mut ctx, 40, t0 + Duration::from_secs(80));
        assert_eq!(ctx.rate(&id(80)), Some(0.0));
    }

    #[test]
    fn high_water_is_the_maximum_over_the_window() {
        let t0 = Instant::now();
        let mut ctx = Context::default();
        let empty = counters::Snapshot::default();
        let marks = |m: &[(u64, u32)]| m.iter().copied().collect::<HashMap<_, _>>();
        ctx.refresh(Snapshot::default(), &empty, marks(&[(1, 9), (2, 3)]), t0);
        ctx.refresh(
            Snapshot::default(),
            &empty,
            marks(&[(1, 4)]),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(ctx.high_water(1), 9);
        assert_eq!(ctx.high_water(2), 3);
        assert_eq!(ctx.high_water(3), 0);
        ctx.refresh(
            Snapshot::default(),
            &empty,
            HashMap::new(),
            t0 + Duration::from_secs(100),
        );
        assert_eq!(ctx.high_water(1), 4, "the 9 is older than the window");
    }
}
