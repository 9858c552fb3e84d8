//! The Prometheus metrics: one `Metrics` registers every family; `update` copies a
//! [`Snapshot`] of the in-kernel counters into them; `render` produces the text format.

use std::sync::atomic::Ordering;

use prometheus::{
    core::{AtomicU64, GenericCounter},
    Encoder as _, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    counters::Snapshot,
    events::{listen_ip, reason_label, EventStats},
    probes::Hook,
};

type Counter = GenericCounter<AtomicU64>;
type CounterVec = prometheus::core::GenericCounterVec<AtomicU64>;

/// Labels of `listendrop_drops_total`. No client address or port is ever a label: their
/// number is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropLabels {
    /// Network namespace inode.
    pub netns: String,
    /// `ipv4` or `ipv6` (the listener's family).
    pub family: &'static str,
    /// Bound address (`0.0.0.0` / `::` for wildcard listeners).
    pub listen_addr: String,
    /// Bound port.
    pub listen_port: String,
    /// Drop class.
    pub reason: &'static str,
}

impl DropLabels {
    const NAMES: [&'static str; 5] = ["netns", "family", "listen_addr", "listen_port", "reason"];

    fn of(key: &listendrop_common::ListenerKey) -> Self {
        Self {
            netns: key.netns.to_string(),
            family: if key.family == listendrop_common::AF_INET6 {
                "ipv6"
            } else {
                "ipv4"
            },
            listen_addr: listen_ip(key).to_string(),
            listen_port: key.port.to_string(),
            reason: reason_label(key.reason),
        }
    }

    fn values(&self) -> [&str; 5] {
        [
            &self.netns,
            self.family,
            &self.listen_addr,
            &self.listen_port,
            self.reason,
        ]
    }
}

/// Every metric family listendrop exports.
pub struct Metrics {
    registry: Registry,
    drops: CounterVec,
    events_lost: Counter,
    events_received: Counter,
    events_malformed: Counter,
    uncounted: CounterVec,
}

impl Metrics {
    /// Registers every family (and the process collector: CPU, memory, fds).
    pub fn new(hooks: &[Hook]) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let drops = CounterVec::new(
            Opts::new(
                "listendrop_drops_total",
                "Handshake packets dropped by a listening socket, per listener and reason, \
                 counted in the kernel exactly as the kernel's own ListenOverflows/ListenDrops \
                 count them (a client retransmit dropped again counts again).",
            ),
            &DropLabels::NAMES,
        )?;
        let events_lost = Counter::new(
            "listendrop_events_lost_total",
            "Per-handshake events the kernel could not hand to the daemon (ring buffer full); \
             drop counters are unaffected.",
        )?;
        let events_received = Counter::new(
            "listendrop_events_total",
            "Per-handshake drop events received from the kernel and logged.",
        )?;
        let events_malformed = Counter::new(
            "listendrop_events_malformed_total",
            "Ring-buffer records that could not be decoded (eBPF object of another version).",
        )?;
        let uncounted = CounterVec::new(
            Opts::new(
                "listendrop_drops_unattributed_total",
                "Drops seen but not attributed to a listener: cause=map_full (counter map \
                 full, raise --max-listener-keys) or cause=no_listener (no socket on the drop).",
            ),
            &["cause"],
        )?;
        let probe_attached = IntGaugeVec::new(
            Opts::new(
                "listendrop_probe_attached",
                "1 when the hook is attached, 0 when this kernel does not allow it (the log \
                 says why).",
            ),
            &["probe", "kind"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "listendrop_build_info",
                "Always 1; the labels say which listendrop and which kernel.",
            ),
            &["version", "kernel"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &kernel_release()])
            .set(1);
        for hook in hooks {
            probe_attached
                .with_label_values(&[hook.probe, hook.kind])
                .set(i64::from(hook.status.is_ok()));
        }
        registry.register(Box::new(drops.clone()))?;
        registry.register(Box::new(events_lost.clone()))?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(events_malformed.clone()))?;
        registry.register(Box::new(uncounted.clone()))?;
        registry.register(Box::new(probe_attached))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            drops,
            events_lost,
            events_received,
            events_malformed,
            uncounted,
        })
    }

    /// Copies the kernel's totals and the event statistics into the metrics.
    pub fn update(&self, snap: &Snapshot, stats: &EventStats) {
        for (key, total) in &snap.drops {
            let labels = DropLabels::of(key);
            set_total(&self.drops.with_label_values(&labels.values()), *total);
        }
        set_total(&self.events_lost, snap.events_lost);
        set_total(
            &self.events_received,
            stats.received.load(Ordering::Relaxed),
        );
        set_total(
            &self.events_malformed,
            stats.malformed.load(Ordering::Relaxed),
        );
        set_total(
            &self.uncounted.with_label_values(&["map_full"]),
            snap.drops_map_full,
        );
        set_total(
            &self.uncounted.with_label_values(&["no_listener"]),
            snap.no_listener,
        );
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Moves a counter up to `total`, an absolute value read from the kernel. Kernel counters
/// only grow while the programs are loaded, so a smaller value is ignored.
fn set_total(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// `uname -r` of the running kernel.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use listendrop_common::{ListenerKey, Reason, AF_INET, AF_INET6};

    use super::*;

    fn key(family: u16, port: u16) -> ListenerKey {
        let mut k = ListenerKey::ZERO;
        k.family = family;
        k.port = port;
        k.netns = 4026532000;
        k.reason = Reason::AckAcceptQueueFull as u32;
        if family == AF_INET {
            k.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        }
        k
    }

    fn hooks() -> Vec<Hook> {
        vec![
            Hook {
                probe: "skb:kfree_skb",
                kind: "tracepoint",
                status: Ok(()),
            },
            Hook {
                probe: "tcp_conn_request",
                kind: "kprobe",
                status: Err("no kprobes".into()),
            },
        ]
    }

    /// Parses the rendered text with an independent parser (prometheus-parse).
    fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .expect("valid exposition")
            .samples
    }

    fn value(sample: &prometheus_parse::Sample) -> f64 {
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected type"),
        }
    }

    #[test]
    fn drops_are_rendered_per_listener_with_kernel_totals() {
        let metrics = Metrics::new(&hooks()).unwrap();
        let mut snap = Snapshot::default();
        snap.drops.insert(key(AF_INET, 7004), 12);
        snap.drops.insert(key(AF_INET6, 7005), 3);
        metrics.update(&snap, &EventStats::default());
        // Totals are absolute: a second update with larger totals moves the counter to
        // them, it does not add them.
        snap.drops.insert(key(AF_INET, 7004), 15);
        metrics.update(&snap, &EventStats::default());

        let text = metrics.render();
        let drops: Vec<_> = samples(&text)
            .into_iter()
            .filter(|s| s.metric == "listendrop_drops_total")
            .collect();
        assert_eq!(drops.len(), 2, "{text}");
        let v4 = drops
            .iter()
            .find(|s| s.labels.get("listen_port") == Some("7004"))
            .unwrap();
        assert_eq!(value(v4), 15.0);
        assert_eq!(v4.labels.get("family"), Some("ipv4"));
        assert_eq!(v4.labels.get("listen_addr"), Some("127.0.0.1"));
        assert_eq!(v4.labels.get("netns"), Some("4026532000"));
        assert_eq!(v4.labels.get("reason"), Some("ack_accept_queue_full"));
        let v6 = drops
            .iter()
            .find(|s| s.labels.get("listen_port") == Some("7005"))
            .unwrap();
        assert_eq!(value(v6), 3.0);
        assert_eq!(v6.labels.get("listen_addr"), Some("::"));
        // Client addresses never become labels: these five are all there are.
        for sample in &drops {
            let mut names: Vec<_> = sample.labels.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(
                names,
                ["family", "listen_addr", "listen_port", "netns", "reason"]
            );
        }
    }

    #[test]
    fn probes_and_health_are_exported() {
        let metrics = Metrics::new(&hooks()).unwrap();
        let snap = Snapshot {
            events_lost: 7,
            drops_map_full: 2,
            ..Snapshot::default()
        };
        let stats = EventStats::default();
        stats.received.store(40, Ordering::Relaxed);
        metrics.update(&snap, &stats);
        let all = samples(&metrics.render());
        let find = |name: &str, label: Option<(&str, &str)>| {
            all.iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(value)
        };
        assert_eq!(find("listendrop_events_lost_total", None), Some(7.0));
        assert_eq!(find("listendrop_events_total", None), Some(40.0));
        assert_eq!(
            find(
                "listendrop_drops_unattributed_total",
                Some(("cause", "map_full"))
            ),
            Some(2.0)
        );
        assert_eq!(
            find(
                "listendrop_probe_attached",
                Some(("probe", "skb:kfree_skb"))
            ),
            Some(1.0)
        );
        assert_eq!(
            find(
                "listendrop_probe_attached",
                Some(("probe", "tcp_conn_request"))
            ),
            Some(0.0)
        );
        assert_eq!(find("listendrop_build_info", None), Some(1.0));
    }
}
