//! Reads the in-kernel counters: exact totals per listener and reason, and the health
//! counters of the programs.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use listendrop_common::{
    DropCount, ListenerKey, COUNTER_DROPS_MAP_FULL, COUNTER_EVENTS_LOST,
    COUNTER_EVENTS_RATE_LIMITED, COUNTER_NO_LISTENER, COUNTER_READ_ERRORS, COUNTER_STALE_CALLS,
    MAP_COUNTERS, MAP_DROPS,
};

/// Totals at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Packets and handshakes per listener and reason since the programs were loaded.
    pub drops: BTreeMap<ListenerKey, DropCount>,
    /// Events that did not fit in the ring buffer.
    pub events_lost: u64,
    /// Events held back by the per-listener rate limit.
    pub events_rate_limited: u64,
    /// Drops not attributed to a listener because the counter map was full.
    pub drops_map_full: u64,
    /// Matching drops that carried no listener socket.
    pub no_listener: u64,
    /// Kernel reads that failed inside the programs.
    pub read_errors: u64,
    /// Entry states abandoned because their return probe never ran.
    pub stale_calls: u64,
}

/// Handles on the counter maps.
pub struct Counters {
    drops: PerCpuHashMap<MapData, ListenerKey, DropCount>,
    health: PerCpuArray<MapData, u64>,
}

impl Counters {
    /// Takes the counter maps from the probes.
    pub fn take(probes: &mut crate::probes::Probes) -> anyhow::Result<Self> {
        let drops = probes.take_map(MAP_DROPS)?;
        let health = probes.take_map(MAP_COUNTERS)?;
        Ok(Self {
            drops: drops.try_into().context("map DROPS")?,
            health: health.try_into().context("map COUNTERS")?,
        })
    }

    /// Deletes the counters of `key` (an expired listener), freeing its map entry.
    pub fn remove(&mut self, key: &ListenerKey) {
        // Already gone (a race with another remover) is fine.
        let _ = self.drops.remove(key);
    }

    /// Reads every counter now.
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut snap = Snapshot::default();
        for entry in self.drops.iter() {
            let (key, per_cpu) = entry.context("reading map DROPS")?;
            let total = per_cpu
                .iter()
                .fold(DropCount::default(), |sum, c| DropCount {
                    packets: sum.packets + c.packets,
                    handshakes: sum.handshakes + c.handshakes,
                });
            snap.drops.insert(key, total);
        }
        let health = |index: u32| -> anyhow::Result<u64> {
            Ok(self
                .health
                .get(&index, 0)
                .context("reading map COUNTERS")?
                .iter()
                .sum())
        };
        snap.events_lost = health(COUNTER_EVENTS_LOST)?;
        snap.events_rate_limited = health(COUNTER_EVENTS_RATE_LIMITED)?;
        snap.drops_map_full = health(COUNTER_DROPS_MAP_FULL)?;
        snap.no_listener = health(COUNTER_NO_LISTENER)?;
        snap.read_errors = health(COUNTER_READ_ERRORS)?;
        snap.stale_calls = health(COUNTER_STALE_CALLS)?;
        Ok(snap)
    }
}
