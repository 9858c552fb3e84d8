//! What the daemon's tasks share, and the inventory pass: the listener inventory, the
//! counters read right after it, the high-water marks, and the expiry of listeners gone
//! for longer than `--stale-after-secs`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::MapData;

use crate::{
    context::Context,
    counters::{self, Counters},
    filter::Filter,
    inventory::Inventory,
    listener::{ListenerId, Netns},
    metrics::{kernel::PassTotals, Metrics},
    util::lock,
};

/// Everything the tasks share.
pub(super) struct Shared {
    /// The counter maps (also the kernel collector's source).
    pub counters: Arc<Mutex<Counters>>,
    /// The eBPF high-water marks (socket cookie → accept queue length).
    pub high_water: Mutex<aya::maps::HashMap<MapData, u64, u32>>,
    /// What the inventory knows.
    pub context: Mutex<Context>,
    /// The latest pass's per-namespace totals (read by the kernel collector).
    pub pass: PassTotals,
    /// The exposition.
    pub metrics: Metrics,
    /// Which listeners are reported.
    pub filter: Filter,
    /// Listeners no longer in the inventory, since when (for `--stale-after-secs`).
    pub gone_since: Mutex<HashMap<ListenerId, Instant>>,
    /// `--stale-after-secs`.
    pub stale_after: Duration,
}

impl Shared {
    /// One scrape: the kernel's values now and the inventory families of the last pass.
    /// Reads only: any number of scrapers see consistent values.
    pub fn scrape(&self) -> String {
        let start = Instant::now();
        let text = self.metrics.render();
        self.metrics.observe_scrape(start.elapsed());
        text
    }

    /// One inventory pass (blocking: sock_diag in every namespace, /proc), then the
    /// expiry of listeners gone for longer than `--stale-after-secs`.
    pub fn refresh(&self, inventory: &mut Inventory) {
        let started = Instant::now();
        let snapshot = inventory.collect();
        let marks = take_high_water(&mut lock(&self.high_water));
        let counts = match lock(&self.counters).snapshot() {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("reading counters for the inventory failed: {e}");
                return;
            }
        };
        let now = Instant::now();
        let mut ctx = lock(&self.context);
        let first = ctx.view.inventory.namespaces.is_empty();
        ctx.refresh(snapshot, &counts, marks, now);
        if first {
            tracing::info!(
                "listener inventory: {} network namespaces, {} listeners",
                ctx.view.inventory.namespaces.len(),
                ctx.view.listeners.len()
            );
        }
        self.expire(&mut ctx, &counts, now);
        *lock(&self.pass) = Arc::new(ctx.totals());
        self.metrics.update_inventory(&ctx, &self.filter, started);
    }

    /// Forgets the counters of listeners that left the inventory long enough ago, so that
    /// listener churn cannot fill the kernel map nor grow the exposition without bound. A
    /// namespace that could not be read this pass does not make its listeners "gone".
    /// Their series vanish with their counters: nothing can bring them back but new drops.
    fn expire(&self, ctx: &mut Context, counts: &counters::Snapshot, now: Instant) {
        let unreadable: BTreeSet<Netns> = ctx
            .view
            .inventory
            .skipped
            .iter()
            .map(|s| Netns(s.inode))
            .collect();
        let mut gone = lock(&self.gone_since);
        gone.retain(|id, _| counts.listeners.contains_key(id));
        for (id, listener) in &counts.listeners {
            let present = ctx.view.listeners.contains_key(id);
            if present || unreadable.contains(&id.netns) || unreadable.contains(&Netns(0)) {
                gone.remove(id);
                continue;
            }
            let since = *gone.entry(*id).or_insert(now);
            if now.duration_since(since) >= self.stale_after {
                lock(&self.counters).remove(id);
                ctx.retire(id, counters::dropped(listener));
                gone.remove(id);
            }
        }
    }
}

/// Reads and clears the eBPF high-water marks (cookie → length).
fn take_high_water(map: &mut aya::maps::HashMap<MapData, u64, u32>) -> HashMap<u64, u32> {
    let marks: HashMap<u64, u32> = map.iter().filter_map(Result::ok).collect();
    for cookie in marks.keys() {
        let _ = map.remove(cookie);
    }
    marks
}
