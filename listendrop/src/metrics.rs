//! The Prometheus metrics: one `Metrics` registers every family; `update` copies a
//! [`Snapshot`] of the in-kernel counters into them; `render` produces the text format.

use std::sync::{atomic::Ordering, Arc};

use listendrop_common::{ListenerKey, Reason, AF_INET6};
use prometheus::{
    core::{AtomicU64, GenericCounter, GenericCounterVec},
    Encoder as _, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    counters::Snapshot,
    events::{listen_ip, EventStats},
    probes::Hook,
};

type Counter = GenericCounter<AtomicU64>;
type CounterVec = GenericCounterVec<AtomicU64>;

/// The labels of a listener. No client address or port is ever a label: their number is
/// unbounded; they are in the log and the event stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerLabels {
    /// Network namespace inode.
    pub netns: String,
    /// `ipv4` or `ipv6` (the listener's family).
    pub family: &'static str,
    /// Bound address (`0.0.0.0` / `::` for wildcard listeners).
    pub listen_addr: String,
    /// Bound port.
    pub listen_port: String,
}

impl ListenerLabels {
    const NAMES: [&'static str; 4] = ["netns", "family", "listen_addr", "listen_port"];
    const NAMES_WITH_REASON: [&'static str; 5] =
        ["netns", "family", "listen_addr", "listen_port", "reason"];

    /// The labels of `key`'s listener.
    pub fn of(key: &ListenerKey) -> Self {
        Self {
            netns: key.netns.to_string(),
            family: if key.family == AF_INET6 {
                "ipv6"
            } else {
                "ipv4"
            },
            listen_addr: listen_ip(key).to_string(),
            listen_port: key.port.to_string(),
        }
    }

    /// The four label values, in [`Self::NAMES`] order.
    pub fn values(&self) -> [&str; 4] {
        [
            &self.netns,
            self.family,
            &self.listen_addr,
            &self.listen_port,
        ]
    }

    fn values_with<'a>(&'a self, reason: &'a str) -> [&'a str; 5] {
        [
            &self.netns,
            self.family,
            &self.listen_addr,
            &self.listen_port,
            reason,
        ]
    }
}

/// Every metric family listendrop exports.
pub struct Metrics {
    registry: Registry,
    drops: CounterVec,
    handshakes: CounterVec,
    syncookies: CounterVec,
    synack_retransmits: CounterVec,
    resets: CounterVec,
    events: Counter,
    events_lost: CounterVec,
    events_malformed: Counter,
    bpf_errors: CounterVec,
    scrape_duration: prometheus::Gauge,
    inventory_duration: prometheus::Gauge,
    context: ContextFamilies,
    /// The inventory families live in a registry of their own, rendered once per inventory
    /// pass (not per scrape: with 10,000 listeners that is most of the exposition).
    context_registry: Registry,
    context_text: std::sync::Mutex<Arc<String>>,
}

/// The families fed by the listener inventory (`update_context`).
struct ContextFamilies {
    accept_len: IntGaugeVec,
    accept_limit: IntGaugeVec,
    syn_len: IntGaugeVec,
    high_water: IntGaugeVec,
    drop_rate: prometheus::GaugeVec,
    info: IntGaugeVec,
    sysctl: IntGaugeVec,
    kernel: CounterVec,
    unattributed: CounterVec,
    /// Namespaces given per-namespace series last time (to drop vanished ones).
    namespaces: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<CounterVec> {
    let vec = CounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

impl Metrics {
    /// Registers every family (and the process collector: CPU, memory, fds), with the
    /// attach outcome of `hooks` and the `coverage` it gives.
    pub fn new(hooks: &[Hook], coverage: &[(Reason, bool)]) -> prometheus::Result<Self> {
        let r = Registry::new();
        let listener = &ListenerLabels::NAMES;
        let with_reason = &ListenerLabels::NAMES_WITH_REASON;
        let drops = counter_vec(
            &r,
            "listendrop_drops_total",
            "Handshake packets dropped by a listening socket, per listener and reason, counted \
             in the kernel exactly as the kernel's own ListenOverflows/ListenDrops count them \
             (a client retransmit dropped again counts again).",
            with_reason,
        )?;
        let handshakes = counter_vec(
            &r,
            "listendrop_dropped_handshakes_total",
            "Distinct handshakes dropped, per listener and reason: one per client 4-tuple per \
             drop episode, however often its retransmits are dropped.",
            with_reason,
        )?;
        let syncookies = counter_vec(
            &r,
            "listendrop_syncookies_sent_total",
            "SYN-ACKs answered with a syncookie because the SYN queue was full (or \
             tcp_syncookies=2); not a drop, a sign of SYN queue overflow (SyncookiesSent).",
            listener,
        )?;
        let synack_retransmits = counter_vec(
            &r,
            "listendrop_synack_retransmits_total",
            "SYN-ACKs the listener retransmitted (tcp:tcp_retransmit_synack). For a handshake \
             whose ACK was dropped, the log says the client believes it is connected.",
            listener,
        )?;
        let resets = counter_vec(
            &r,
            "listendrop_overflow_resets_total",
            "ACK-time overflows answered with a reset to the client because \
             tcp_abort_on_overflow=1 (EmbryonicRsts).",
            listener,
        )?;
        let events = Counter::new(
            "listendrop_events_total",
            "Per-handshake events received from the kernel and logged.",
        )?;
        r.register(Box::new(events.clone()))?;
        let events_lost = counter_vec(
            &r,
            "listendrop_events_lost_total",
            "Per-handshake events not delivered: cause=rate_limited (over \
             --events-per-listener-per-sec) or cause=ring_buffer_full. Counters are unaffected.",
            &["cause"],
        )?;
        let events_malformed = Counter::new(
            "listendrop_events_malformed_total",
            "Ring-buffer records that could not be decoded (eBPF object of another version).",
        )?;
        r.register(Box::new(events_malformed.clone()))?;
        let bpf_errors = counter_vec(
            &r,
            "listendrop_bpf_errors_total",
            "Problems inside the eBPF programs: kind=map_full (a drop of a listener the full \
             counter map had no room for: raise --max-listener-keys), kind=no_listener (a \
             drop without its socket), kind=read (a kernel read failed; a drop may be \
             missing), kind=stale_call (a return probe was missed).",
            &["kind"],
        )?;
        let probe_attached = gauge_vec(
            &r,
            "listendrop_probe_attached",
            "1 when the hook is attached with this kind, 0 when the attempt failed (the log \
             says why).",
            &["probe", "kind"],
        )?;
        for hook in hooks {
            probe_attached
                .with_label_values(&[hook.probe, hook.kind.as_str()])
                .set(i64::from(hook.status.is_ok()));
        }
        let coverage_gauge = gauge_vec(
            &r,
            "listendrop_coverage",
            "1 when this class of event is observable with the hooks this kernel allowed, 0 \
             when it is not (its counters then stay absent, not zero).",
            &["reason"],
        )?;
        for (reason, covered) in coverage {
            coverage_gauge
                .with_label_values(&[reason.as_str()])
                .set(i64::from(*covered));
        }
        let build_info = gauge_vec(
            &r,
            "listendrop_build_info",
            "Always 1; the labels say which listendrop and which kernel.",
            &["version", "kernel"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &kernel_release()])
            .set(1);
        let scrape_duration = prometheus::Gauge::new(
            "listendrop_scrape_duration_seconds",
            "Time the previous /metrics request took to render.",
        )?;
        r.register(Box::new(scrape_duration.clone()))?;
        let inventory_duration = prometheus::Gauge::new(
            "listendrop_inventory_duration_seconds",
            "Time the previous listener inventory pass took (sock_diag in every namespace, \
             owners, sysctls, counters, and rendering the per-listener families).",
        )?;
        r.register(Box::new(inventory_duration.clone()))?;
        let context_registry = Registry::new();
        let context = ContextFamilies::new(&context_registry)?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            scrape_duration,
            inventory_duration,
            context,
            context_registry,
            context_text: std::sync::Mutex::new(Arc::new(String::new())),
            registry: r,
            drops,
            handshakes,
            syncookies,
            synack_retransmits,
            resets,
            events,
            events_lost,
            events_malformed,
            bpf_errors,
        })
    }

    /// Copies the kernel's totals and the event statistics into the metrics.
    pub fn update(&self, snap: &Snapshot, stats: &EventStats) {
        for (key, count) in &snap.drops {
            let labels = ListenerLabels::of(key);
            let Some(reason) = Reason::from_u32(key.reason) else {
                continue;
            };
            match reason {
                Reason::SyncookieSent => set_total(
                    &self.syncookies.with_label_values(&labels.values()),
                    count.packets,
                ),
                Reason::SynackRetransmit => {
                    set_total(
                        &self.synack_retransmits.with_label_values(&labels.values()),
                        count.packets,
                    );
                }
                Reason::OverflowReset => set_total(
                    &self.resets.with_label_values(&labels.values()),
                    count.packets,
                ),
                drop => {
                    let values = labels.values_with(drop.as_str());
                    set_total(&self.drops.with_label_values(&values), count.packets);
                    set_total(
                        &self.handshakes.with_label_values(&values),
                        count.handshakes,
                    );
                }
            }
        }
        set_total(&self.events, stats.received.load(Ordering::Relaxed));
        set_total(
            &self.events_malformed,
            stats.malformed.load(Ordering::Relaxed),
        );
        set_total(
            &self.events_lost.with_label_values(&["ring_buffer_full"]),
            snap.events_lost,
        );
        set_total(
            &self.events_lost.with_label_values(&["rate_limited"]),
            snap.events_rate_limited,
        );
        set_total(
            &self.bpf_errors.with_label_values(&["map_full"]),
            snap.drops_map_full,
        );
        set_total(
            &self.bpf_errors.with_label_values(&["no_listener"]),
            snap.no_listener,
        );
        set_total(
            &self.bpf_errors.with_label_values(&["read"]),
            snap.read_errors,
        );
        set_total(
            &self.bpf_errors.with_label_values(&["stale_call"]),
            snap.stale_calls,
        );
    }

    /// Removes every series of the listener and reason of `key` (it expired).
    pub fn forget(&self, key: &ListenerKey) {
        let labels = ListenerLabels::of(key);
        let Some(reason) = Reason::from_u32(key.reason) else {
            return;
        };
        let _ = match reason {
            Reason::SyncookieSent => self.syncookies.remove_label_values(&labels.values()),
            Reason::SynackRetransmit => self
                .synack_retransmits
                .remove_label_values(&labels.values()),
            Reason::OverflowReset => self.resets.remove_label_values(&labels.values()),
            drop => {
                let values = labels.values_with(drop.as_str());
                let _ = self.handshakes.remove_label_values(&values);
                self.drops.remove_label_values(&values)
            }
        };
    }

    /// The Prometheus text exposition of every family: the counters now, the inventory
    /// families as of the last pass.
    pub fn render(&self) -> String {
        let mut out = encode(&self.registry);
        out.push_str(&crate::util::lock(&self.context_text));
        out
    }

    /// Records how long a scrape took (shown by the next one).
    pub fn observe_scrape(&self, took: std::time::Duration) {
        self.scrape_duration.set(took.as_secs_f64());
    }

    /// Records how long an inventory pass took, its rendering included.
    pub fn observe_inventory(&self, took: std::time::Duration) {
        self.inventory_duration.set(took.as_secs_f64());
    }
}

/// The text exposition of `registry`.
fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!("encoding metrics failed: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Moves a counter to `total`, an absolute value read from the kernel. A smaller value
/// means the source restarted (a namespace reborn under the same inode): the counter
/// resets, which is what Prometheus' rate() expects.
fn set_total(counter: &Counter, total: u64) {
    let current = counter.get();
    if total < current {
        counter.reset();
        counter.inc_by(total);
    } else if total > current {
        counter.inc_by(total - current);
    }
}

impl ContextFamilies {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let listener = &ListenerLabels::NAMES;
        let info_labels = [
            "netns",
            "family",
            "listen_addr",
            "listen_port",
            "pid",
            "comm",
            "cgroup",
        ];
        let drop_rate = prometheus::GaugeVec::new(
            Opts::new(
                "listendrop_recent_drop_rate",
                "Drops per second of the listener over the last minute, as `listendrop status` \
                 shows it (in PromQL prefer rate(listendrop_drops_total[1m])).",
            ),
            listener,
        )?;
        r.register(Box::new(drop_rate.clone()))?;
        Ok(Self {
            accept_len: gauge_vec(
                r,
                "listendrop_accept_queue_length",
                "Connections waiting for accept() now (Recv-Q of ss -lnt; SO_REUSEPORT members \
                 of one address summed).",
                listener,
            )?,
            accept_limit: gauge_vec(
                r,
                "listendrop_accept_queue_limit",
                "Accept queue limit: min(listen() backlog, net.core.somaxconn) (Send-Q of \
                 ss -lnt). The kernel drops when the length exceeds it.",
                listener,
            )?,
            syn_len: gauge_vec(
                r,
                "listendrop_syn_queue_length",
                "Half-open connections (SYN_RECV requests) of the listener now.",
                listener,
            )?,
            high_water: gauge_vec(
                r,
                "listendrop_accept_queue_high_water",
                "Highest accept queue length over the last minute: observed by the eBPF hooks \
                 at every SYN, handshake and drop where the kernel allows them, and sampled \
                 (catches stalls shorter than the scrape interval).",
                listener,
            )?,
            drop_rate,
            info: gauge_vec(
                r,
                "listendrop_listener_info",
                "1 per listening socket owner: the process (lowest pid among holders), its \
                 name and cgroup.",
                &info_labels,
            )?,
            sysctl: gauge_vec(
                r,
                "listendrop_sysctl",
                "Listen-related sysctls of each network namespace (net.core.somaxconn, \
                 net.ipv4.tcp_max_syn_backlog, tcp_abort_on_overflow, tcp_syncookies, \
                 tcp_synack_retries).",
                &["netns", "name"],
            )?,
            kernel: counter_vec(
                r,
                "listendrop_kernel_netstat_total",
                "The kernel's own counters of each network namespace (nstat TcpExt*), for \
                 reconciliation with listendrop's.",
                &["netns", "counter"],
            )?,
            unattributed: counter_vec(
                r,
                "listendrop_unattributed_drops_total",
                "Per namespace: the kernel's ListenDrops since listendrop started minus the drops \
                 listendrop attributed to a listener. Not zero means drops of a class this \
                 kernel does not let listendrop see (listendrop_coverage) or an uncounted one.",
                &["netns"],
            )?,
            namespaces: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        })
    }
}

impl Metrics {
    /// Copies the listener inventory (`ctx`) into its families and renders them for the
    /// scrapes until the next pass.
    pub fn update_context(&self, ctx: &crate::context::Context, filter: &crate::filter::Filter) {
        let f = &self.context;
        for vec in [
            &f.accept_len,
            &f.accept_limit,
            &f.syn_len,
            &f.high_water,
            &f.info,
        ] {
            vec.reset();
        }
        f.drop_rate.reset();
        for (labels, row) in &ctx.rows {
            let netns = labels.netns.parse().unwrap_or(0);
            let port = labels.listen_port.parse().unwrap_or(0);
            if !filter.allows(netns, port) {
                continue;
            }
            let values = labels.values();
            f.accept_len
                .with_label_values(&values)
                .set(i64::from(row.accept_queue_len));
            f.accept_limit
                .with_label_values(&values)
                .set(i64::from(row.accept_queue_limit));
            f.syn_len
                .with_label_values(&values)
                .set(i64::from(row.syn_queue_len));
            let high = ctx.high_water(&row.cookies).max(row.accept_queue_len);
            f.high_water.with_label_values(&values).set(i64::from(high));
            if let Some(rate) = ctx.rate(labels) {
                f.drop_rate.with_label_values(&values).set(rate);
            }
            for owner in &row.owners {
                let pid = owner.pid.to_string();
                f.info
                    .with_label_values(&[
                        values[0],
                        values[1],
                        values[2],
                        values[3],
                        &pid,
                        &owner.comm,
                        &owner.cgroup,
                    ])
                    .set(1);
            }
        }
        let unattributed = ctx.unattributed();
        let mut seen = std::collections::BTreeSet::new();
        for ns in &ctx.inventory.namespaces {
            let inode = ns.namespace.inode;
            if !filter.allows_netns(inode) {
                continue;
            }
            let netns = inode.to_string();
            for (name, value) in ns.sysctls.named() {
                f.sysctl
                    .with_label_values(&[&netns, name])
                    .set(i64::from(value));
            }
            for (name, value) in ns.counters.named() {
                set_total(&f.kernel.with_label_values(&[&netns, name]), value);
            }
            set_total(
                &f.unattributed.with_label_values(&[&netns]),
                unattributed.get(&inode).copied().unwrap_or(0),
            );
            seen.insert(netns);
        }
        // Namespaces that vanished lose their series.
        let mut last = crate::util::lock(&f.namespaces);
        for gone in last.difference(&seen) {
            for (name, _) in crate::inventory::counters::KernelCounters::default().named() {
                let _ = f.kernel.remove_label_values(&[gone, name]);
            }
            let _ = f.unattributed.remove_label_values(&[gone]);
            for name in crate::inventory::sysctls::KEYS {
                let _ = f.sysctl.remove_label_values(&[gone, name]);
            }
        }
        *last = seen;
        drop(last);
        *crate::util::lock(&self.context_text) = Arc::new(encode(&self.context_registry));
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
    use listendrop_common::{DropCount, AF_INET};

    use super::*;
    use crate::probes::{Group, Kind};

    fn key(family: u16, port: u16, reason: Reason) -> ListenerKey {
        let mut k = ListenerKey::ZERO;
        k.family = family;
        k.port = port;
        k.netns = 4026532000;
        k.reason = reason as u32;
        if family == AF_INET {
            k.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        }
        k
    }

    fn hooks() -> Vec<Hook> {
        vec![
            Hook {
                group: Group::Ack,
                probe: "skb:kfree_skb",
                kind: Kind::Tracepoint,
                status: Ok(()),
            },
            Hook {
                group: Group::Syn,
                probe: "tcp_conn_request",
                kind: Kind::Kprobe,
                status: Err("no kprobes".into()),
            },
        ]
    }

    fn count(packets: u64, handshakes: u64) -> DropCount {
        DropCount {
            packets,
            handshakes,
        }
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

    fn find(all: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        all.iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(value)
    }

    #[test]
    fn drops_are_rendered_per_listener_with_kernel_totals() {
        let metrics = Metrics::new(&hooks(), &[]).unwrap();
        let mut snap = Snapshot::default();
        snap.drops
            .insert(key(AF_INET, 7004, Reason::AckAcceptQueueFull), count(12, 2));
        snap.drops
            .insert(key(AF_INET6, 7005, Reason::SynAcceptQueueFull), count(3, 1));
        metrics.update(&snap, &EventStats::default());
        // Totals are absolute: a second update with larger totals moves the counter to
        // them, it does not add them.
        snap.drops
            .insert(key(AF_INET, 7004, Reason::AckAcceptQueueFull), count(15, 3));
        metrics.update(&snap, &EventStats::default());

        let text = metrics.render();
        let all = samples(&text);
        let drops: Vec<_> = all
            .iter()
            .filter(|s| s.metric == "listendrop_drops_total")
            .collect();
        assert_eq!(drops.len(), 2, "{text}");
        let v4 = [
            ("listen_port", "7004"),
            ("family", "ipv4"),
            ("listen_addr", "127.0.0.1"),
        ];
        assert_eq!(find(&all, "listendrop_drops_total", &v4), Some(15.0));
        assert_eq!(
            find(&all, "listendrop_dropped_handshakes_total", &v4),
            Some(3.0)
        );
        let v6 = [
            ("listen_port", "7005"),
            ("listen_addr", "::"),
            ("reason", "syn_accept_queue_full"),
        ];
        assert_eq!(find(&all, "listendrop_drops_total", &v6), Some(3.0));
        // Client addresses never become labels: these five are all there are.
        for sample in drops {
            let mut names: Vec<_> = sample.labels.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(
                names,
                ["family", "listen_addr", "listen_port", "netns", "reason"]
            );
        }
    }

    #[test]
    fn non_drops_have_their_own_families() {
        let metrics = Metrics::new(&hooks(), &[]).unwrap();
        let mut snap = Snapshot::default();
        snap.drops
            .insert(key(AF_INET, 80, Reason::SyncookieSent), count(5, 0));
        snap.drops
            .insert(key(AF_INET, 80, Reason::SynackRetransmit), count(4, 0));
        snap.drops
            .insert(key(AF_INET, 80, Reason::OverflowReset), count(2, 0));
        metrics.update(&snap, &EventStats::default());
        let all = samples(&metrics.render());
        let port = [("listen_port", "80")];
        assert_eq!(
            find(&all, "listendrop_syncookies_sent_total", &port),
            Some(5.0)
        );
        assert_eq!(
            find(&all, "listendrop_synack_retransmits_total", &port),
            Some(4.0)
        );
        assert_eq!(
            find(&all, "listendrop_overflow_resets_total", &port),
            Some(2.0)
        );
        assert_eq!(find(&all, "listendrop_drops_total", &port), None);
    }

    #[test]
    fn probes_coverage_and_health_are_exported() {
        let coverage = [
            (Reason::AckAcceptQueueFull, true),
            (Reason::SynQueueFull, false),
        ];
        let metrics = Metrics::new(&hooks(), &coverage).unwrap();
        let snap = Snapshot {
            events_lost: 7,
            events_rate_limited: 9,
            drops_map_full: 2,
            read_errors: 1,
            ..Snapshot::default()
        };
        let stats = EventStats::default();
        stats.received.store(40, Ordering::Relaxed);
        metrics.update(&snap, &stats);
        let all = samples(&metrics.render());
        assert_eq!(
            find(
                &all,
                "listendrop_events_lost_total",
                &[("cause", "ring_buffer_full")]
            ),
            Some(7.0)
        );
        assert_eq!(
            find(
                &all,
                "listendrop_events_lost_total",
                &[("cause", "rate_limited")]
            ),
            Some(9.0)
        );
        assert_eq!(find(&all, "listendrop_events_total", &[]), Some(40.0));
        assert_eq!(
            find(&all, "listendrop_bpf_errors_total", &[("kind", "map_full")]),
            Some(2.0)
        );
        assert_eq!(
            find(&all, "listendrop_bpf_errors_total", &[("kind", "read")]),
            Some(1.0)
        );
        let tp = [("probe", "skb:kfree_skb"), ("kind", "tracepoint")];
        assert_eq!(find(&all, "listendrop_probe_attached", &tp), Some(1.0));
        assert_eq!(
            find(
                &all,
                "listendrop_probe_attached",
                &[("probe", "tcp_conn_request")]
            ),
            Some(0.0)
        );
        assert_eq!(
            find(
                &all,
                "listendrop_coverage",
                &[("reason", "ack_accept_queue_full")]
            ),
            Some(1.0)
        );
        assert_eq!(
            find(&all, "listendrop_coverage", &[("reason", "syn_queue_full")]),
            Some(0.0)
        );
        assert_eq!(find(&all, "listendrop_build_info", &[]), Some(1.0));
    }
}
