//! The collector of values that belong to the kernel: drop counters, distinct handshakes,
//! syncookies, SYN-ACK retransmits, overflow resets, the programs' health counters, the
//! events received, and each namespace's netstat counters and unattributed drops. At every
//! scrape it reads one snapshot of its sources and renders it (the const-metric pattern of
//! node_exporter): no mutable counter is nudged toward the kernel, so no scrape can make
//! one decrease, add a difference twice, or bring back an expired listener.

use std::sync::{atomic::Ordering, Arc, Mutex};

use listendrop_common::Health;
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{
    family::{desc, Family},
    names::{self, listener_values, Spec},
};
use crate::{
    counters::{CountersError, Snapshot},
    events::EventStats,
    filter::Filter,
    inventory::counters::KernelCounters,
    listener::Netns,
    probes::programs::Programs,
    util::lock,
};

/// Where the per-listener counters come from: the kernel's maps, or a test's fake.
pub trait CounterSource: Send + Sync {
    /// Every counter now.
    fn snapshot(&self) -> Result<Snapshot, CountersError>;
}

impl CounterSource for Mutex<crate::counters::Counters> {
    fn snapshot(&self) -> Result<Snapshot, CountersError> {
        lock(self).snapshot()
    }
}

/// What the latest inventory pass read of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceTotals {
    /// The namespace.
    pub netns: Netns,
    /// Its netstat counters.
    pub netstat: KernelCounters,
    /// Its ListenDrops since listendrop watched it that no listener was credited with.
    pub unattributed: u64,
}

/// The latest pass's per-namespace totals, swapped whole by the inventory thread.
pub type PassTotals = Arc<Mutex<Arc<Vec<NamespaceTotals>>>>;

/// The collector.
pub struct KernelCollector {
    counters: Arc<dyn CounterSource>,
    programs: Arc<Programs>,
    pass: PassTotals,
    events: Arc<EventStats>,
    filter: Filter,
    descs: Vec<Desc>,
}

/// The families this collector renders.
const FAMILIES: [&Spec; 15] = [
    &names::BPF_MISSED,
    &names::BPF_RUN_SECONDS,
    &names::BPF_RUNS,
    &names::DROPS,
    &names::HANDSHAKES,
    &names::SYNCOOKIES,
    &names::SYNACK_RETRANSMITS,
    &names::OVERFLOW_RESETS,
    &names::EVENTS,
    &names::EVENTS_LOST,
    &names::EVENTS_MALFORMED,
    &names::BPF_ERRORS,
    &names::KERNEL_NETSTAT,
    &names::UNATTRIBUTED,
    &names::COLLECTOR_SUCCESS,
];

impl KernelCollector {
    /// A collector of `counters`, the `programs`' statistics, the inventory's `pass` totals
    /// and the drain task's `events`, reporting only what `filter` allows.
    pub fn new(
        counters: Arc<dyn CounterSource>,
        programs: Arc<Programs>,
        pass: PassTotals,
        events: Arc<EventStats>,
        filter: Filter,
    ) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|spec| desc(spec))
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            counters,
            programs,
            pass,
            events,
            filter,
            descs,
        })
    }

    /// The families of one snapshot (or, when the maps cannot be read, the rest and a 0
    /// for this collector's success).
    pub fn render(&self) -> Vec<MetricFamily> {
        let mut success = Family::new(&names::COLLECTOR_SUCCESS);
        let mut out = match self.counters.snapshot() {
            Ok(snapshot) => {
                success.add(&["kernel"], 1.0);
                self.counters_families(&snapshot)
            }
            Err(e) => {
                tracing::error!("reading the in-kernel counters failed: {e}");
                success.add(&["kernel"], 0.0);
                Vec::new()
            }
        };
        out.extend(self.pass_families());
        out.extend(self.program_families());
        let mut received = Family::new(&names::EVENTS);
        received.add_u64::<&str>(&[], self.events.received.load(Ordering::Relaxed));
        let mut malformed = Family::new(&names::EVENTS_MALFORMED);
        malformed.add_u64::<&str>(&[], self.events.malformed.load(Ordering::Relaxed));
        out.extend([received.finish(), malformed.finish(), success.finish()]);
        out
    }

    fn counters_families(&self, snapshot: &Snapshot) -> Vec<MetricFamily> {
        let mut drops = Family::new(&names::DROPS);
        let mut handshakes = Family::new(&names::HANDSHAKES);
        let mut syncookies = Family::new(&names::SYNCOOKIES);
        let mut synacks = Family::new(&names::SYNACK_RETRANSMITS);
        let mut resets = Family::new(&names::OVERFLOW_RESETS);
        for (id, reason, count) in snapshot.iter() {
            if !self.filter.allows(id) {
                continue;
            }
            let [netns, family, addr, port] = listener_values(id);
            if reason.is_drop() {
                let values = [netns.as_str(), &family, &addr, &port, reason.as_str()];
                drops.add_u64(&values, count.packets);
                handshakes.add_u64(&values, count.handshakes);
                continue;
            }
            let family = match names::family_of(reason).name {
                n if n == names::SYNCOOKIES.name => &mut syncookies,
                n if n == names::SYNACK_RETRANSMITS.name => &mut synacks,
                _ => &mut resets,
            };
            family.add_u64(
                &[netns, id.family().as_str().to_owned(), addr, port],
                count.packets,
            );
        }
        let mut lost = Family::new(&names::EVENTS_LOST);
        let mut errors = Family::new(&names::BPF_ERRORS);
        for h in Health::ALL {
            let family = if h.is_event_loss() {
                &mut lost
            } else {
                &mut errors
            };
            family.add_u64(&[h.label()], snapshot.health(h));
        }
        [drops, handshakes, syncookies, synacks, resets, lost, errors]
            .map(Family::finish)
            .into()
    }

    fn program_families(&self) -> Vec<MetricFamily> {
        let mut missed = Family::new(&names::BPF_MISSED);
        let mut seconds = Family::new(&names::BPF_RUN_SECONDS);
        let mut runs = Family::new(&names::BPF_RUNS);
        let timed = stats_enabled();
        for s in self.programs.stats() {
            if let Some(m) = s.missed {
                missed.add_u64(&[s.program], m);
            }
            if timed {
                seconds.add(&[s.program], s.run_ns as f64 / 1e9);
                runs.add_u64(&[s.program], s.runs);
            }
        }
        vec![missed.finish(), seconds.finish(), runs.finish()]
    }

    fn pass_families(&self) -> Vec<MetricFamily> {
        let pass = Arc::clone(&lock(&self.pass));
        let mut netstat = Family::new(&names::KERNEL_NETSTAT);
        let mut unattributed = Family::new(&names::UNATTRIBUTED);
        for ns in pass.iter().filter(|ns| self.filter.allows_netns(ns.netns)) {
            let netns = ns.netns.to_string();
            for (name, value) in ns.netstat.named() {
                netstat.add_u64(&[netns.as_str(), name], value);
            }
            unattributed.add_u64(&[netns], ns.unattributed);
        }
        vec![netstat.finish(), unattributed.finish()]
    }
}

/// Whether `kernel.bpf_stats_enabled` is on (the kernel then times every program run).
fn stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.render()
    }
}
