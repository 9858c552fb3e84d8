//! Reads the in-kernel counters: exact totals per listener and reason, and the programs'
//! [`Health`] counters, summed over CPUs at one moment.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use listendrop_common::{DropCount, Health, ListenerKey, Reason, MAP_COUNTERS, MAP_DROPS};

use crate::listener::ListenerId;

/// Why the counter maps could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// A map is missing from the loaded object or has another type.
    #[error("map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What aya said.
        source: aya::maps::MapError,
    },
    /// Taking a map from the loaded object or its pin failed.
    #[error("map {name}: {source}")]
    Take {
        /// The map's name.
        name: &'static str,
        /// Why.
        source: Box<crate::probes::ProbeError>,
    },
}

/// What one listener counted per class, since its counters were created.
pub type ListenerCounts = BTreeMap<Reason, DropCount>;

/// Totals at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Packets and handshakes per listener and class.
    pub listeners: BTreeMap<ListenerId, ListenerCounts>,
    /// Each [`Health`] counter, by [`Health::index`].
    pub health: [u64; Health::COUNT as usize],
}

impl Snapshot {
    /// Every (listener, reason, count), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ListenerId, Reason, &DropCount)> {
        self.listeners
            .iter()
            .flat_map(|(id, counts)| counts.iter().map(move |(r, c)| (id, *r, c)))
    }

    /// Dropped packets (every drop reason) per listener.
    pub fn drops_per_listener(&self) -> BTreeMap<ListenerId, u64> {
        self.listeners
            .iter()
            .map(|(id, counts)| (*id, dropped(counts)))
            .collect()
    }

    /// The value of health counter `h`.
    pub fn health(&self, h: Health) -> u64 {
        self.health[h.index() as usize]
    }
}

/// Dropped packets of one listener, all drop reasons.
pub fn dropped(counts: &ListenerCounts) -> u64 {
    counts
        .iter()
        .filter(|(r, _)| r.is_drop())
        .map(|(_, c)| c.packets)
        .sum()
}

/// Handles on the counter maps.
pub struct Counters {
    drops: PerCpuHashMap<MapData, ListenerKey, DropCount>,
    health: PerCpuArray<MapData, u64>,
}

impl Counters {
    /// Takes the counter maps from the probes.
    pub fn take(probes: &mut crate::probes::Probes) -> Result<Self, CountersError> {
        let mut take = |name: &'static str| {
            probes.take_map(name).map_err(|e| CountersError::Take {
                name,
                source: Box::new(e),
            })
        };
        let drops = take(MAP_DROPS)?;
        let health = take(MAP_COUNTERS)?;
        Ok(Self {
            drops: drops.try_into().map_err(|source| CountersError::Map {
                name: MAP_DROPS,
                source,
            })?,
            health: health.try_into().map_err(|source| CountersError::Map {
                name: MAP_COUNTERS,
                source,
            })?,
        })
    }

    /// Deletes every counter of `listener` (it expired), freeing its map entries.
    pub fn remove(&mut self, listener: &ListenerId) {
        let mut key = listener.key();
        for reason in Reason::ALL {
            key.reason = reason as u8;
            // Absent (a class it never had, or a race with another remover) is fine.
            let _ = self.drops.remove(&key);
        }
    }

    /// Reads every counter now.
    pub fn snapshot(&self) -> Result<Snapshot, CountersError> {
        let read_error = |source| CountersError::Map {
            name: MAP_DROPS,
            source,
        };
        let mut snap = Snapshot::default();
        for entry in self.drops.iter() {
            let (key, per_cpu) = entry.map_err(read_error)?;
            // A reason this build does not know (an object of another version): skipped.
            let Some(reason) = key.reason() else {
                continue;
            };
            let total = per_cpu
                .iter()
                .fold(DropCount::default(), |sum, c| DropCount {
                    packets: sum.packets + c.packets,
                    handshakes: sum.handshakes + c.handshakes,
                    ..DropCount::default()
                });
            snap.listeners
                .entry(ListenerId::from(&key))
                .or_default()
                .insert(reason, total);
        }
        for h in Health::ALL {
            let per_cpu = self
                .health
                .get(&h.index(), 0)
                .map_err(|source| CountersError::Map {
                    name: MAP_COUNTERS,
                    source,
                })?;
            snap.health[h.index() as usize] = per_cpu.iter().sum();
        }
        Ok(snap)
    }
}
