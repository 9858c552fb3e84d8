//! Every metric family listendrop exports — name, type, help and label names — in one
//! table that the collectors, `listendrop status` (which reads a daemon's /metrics) and the
//! tests share, and the typed label sets of a listener.

use listendrop_common::Reason;
use prometheus::proto::MetricType;

use crate::{inventory::containers::ContainerIdentity, listener::ListenerId};

/// One metric family.
#[derive(Debug)]
pub struct Spec {
    /// Full name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricType,
    /// HELP text.
    pub help: &'static str,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
}

/// The labels of a listener, in [`LISTENER`] order.
pub const LISTENER: &[&str] = &["netns", "family", "listen_addr", "listen_port"];
const LISTENER_REASON: &[&str] = &["netns", "family", "listen_addr", "listen_port", "reason"];
/// The owner's labels of [`INFO`] after the listener's; the container's, in
/// [`container_values`] order, after those.
const INFO_LABELS: &[&str] = &[
    "netns",
    "family",
    "listen_addr",
    "listen_port",
    "pid",
    "comm",
    "cgroup",
    "container_runtime",
    "container_id",
    "container",
    "image",
    "pod",
    "pod_namespace",
    "pod_uid",
    "pod_qos",
];

const fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: MetricType::COUNTER,
        help,
        labels,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: MetricType::GAUGE,
        help,
        labels,
    }
}

/// `listendrop_drops_total`.
pub const DROPS: Spec = counter(
    "listendrop_drops_total",
    "Handshake packets dropped by a listening socket, per listener and reason, counted in the \
     kernel exactly as the kernel's own ListenOverflows/ListenDrops count them (a client \
     retransmit dropped again counts again).",
    LISTENER_REASON,
);
/// `listendrop_dropped_handshakes_total`.
pub const HANDSHAKES: Spec = counter(
    "listendrop_dropped_handshakes_total",
    "Distinct handshakes dropped, per listener and reason: one per client 4-tuple per drop \
     episode, however often its retransmits are dropped.",
    LISTENER_REASON,
);
/// `listendrop_syncookies_sent_total`.
pub const SYNCOOKIES: Spec = counter(
    "listendrop_syncookies_sent_total",
    "SYN-ACKs answered with a syncookie because the SYN queue was full (or tcp_syncookies=2); \
     not a drop, a sign of SYN queue overflow (SyncookiesSent).",
    LISTENER,
);
/// `listendrop_synack_retransmits_total`.
pub const SYNACK_RETRANSMITS: Spec = counter(
    "listendrop_synack_retransmits_total",
    "SYN-ACKs the listener retransmitted (tcp:tcp_retransmit_synack). For a handshake whose \
     ACK was dropped, the log says the client believes it is connected.",
    LISTENER,
);
/// `listendrop_overflow_resets_total`.
pub const OVERFLOW_RESETS: Spec = counter(
    "listendrop_overflow_resets_total",
    "ACK-time overflows answered with a reset to the client because tcp_abort_on_overflow=1 \
     (EmbryonicRsts).",
    LISTENER,
);
/// `listendrop_events_total`.
pub const EVENTS: Spec = counter(
    "listendrop_events_total",
    "Per-handshake events received from the kernel and logged.",
    &[],
);
/// `listendrop_events_lost_total`.
pub const EVENTS_LOST: Spec = counter(
    "listendrop_events_lost_total",
    "Per-handshake events not delivered: cause=rate_limited (over \
     --events-per-listener-per-sec) or cause=ring_buffer_full. Counters are unaffected.",
    &["cause"],
);
/// `listendrop_events_malformed_total`.
pub const EVENTS_MALFORMED: Spec = counter(
    "listendrop_events_malformed_total",
    "Ring-buffer records that could not be decoded (eBPF object of another version).",
    &[],
);
/// `listendrop_bpf_errors_total`.
pub const BPF_ERRORS: Spec = counter(
    "listendrop_bpf_errors_total",
    "Problems inside the eBPF programs: kind=map_full (a drop of a listener the full counter \
     map had no room for: raise --max-listener-keys), kind=no_listener (a drop without its \
     socket), kind=read (a kernel read failed; a drop may be missing), kind=stale_call (a \
     return probe was missed).",
    &["kind"],
);
/// `listendrop_bpf_missed_total`.
pub const BPF_MISSED: Spec = counter(
    "listendrop_bpf_missed_total",
    "Runs of a listendrop program the kernel skipped (its recursion guard, 5.12+; another \
     BPF program running on that CPU, 6.7+ for kprobes and classic tracepoints) plus kprobe \
     hits lost (nested kprobes, kretprobe instances exhausted; 6.7+). Drops in a skipped run \
     show up in listendrop_unattributed_drops_total. Absent where the kernel does not count \
     them.",
    &["program"],
);
/// `listendrop_bpf_program_run_seconds_total`.
pub const BPF_RUN_SECONDS: Spec = counter(
    "listendrop_bpf_program_run_seconds_total",
    "Time the kernel spent running each listendrop program (its own accounting: only while \
     kernel.bpf_stats_enabled=1, whose timing costs tens of ns per run; absent otherwise).",
    &["program"],
);
/// `listendrop_bpf_program_runs_total`.
pub const BPF_RUNS: Spec = counter(
    "listendrop_bpf_program_runs_total",
    "Runs of each listendrop program (only while kernel.bpf_stats_enabled=1; absent \
     otherwise). run_seconds / runs is the cost per call.",
    &["program"],
);
/// `listendrop_kernel_netstat_total`.
pub const KERNEL_NETSTAT: Spec = counter(
    "listendrop_kernel_netstat_total",
    "The kernel's own counters of each network namespace (nstat TcpExt*), for \
     reconciliation with listendrop's.",
    &["netns", "counter"],
);
/// `listendrop_unattributed_drops_total`.
pub const UNATTRIBUTED: Spec = counter(
    "listendrop_unattributed_drops_total",
    "Per namespace: the kernel's ListenDrops since listendrop started minus the drops \
     listendrop attributed to a listener. Not zero means drops of a class this kernel does \
     not let listendrop see (listendrop_coverage) or an uncounted one.",
    &["netns"],
);
/// `listendrop_accept_queue_length`.
pub const ACCEPT_LEN: Spec = gauge(
    "listendrop_accept_queue_length",
    "Connections waiting for accept() now (Recv-Q of ss -lnt). For an SO_REUSEPORT group, \
     the fullest member's (highest length/limit).",
    LISTENER,
);
/// `listendrop_accept_queue_limit`.
pub const ACCEPT_LIMIT: Spec = gauge(
    "listendrop_accept_queue_limit",
    "Accept queue limit: min(listen() backlog, net.core.somaxconn) (Send-Q of ss -lnt); the \
     kernel drops when the length exceeds it. For an SO_REUSEPORT group, the fullest \
     member's.",
    LISTENER,
);
/// `listendrop_accept_queue_high_water`.
pub const HIGH_WATER: Spec = gauge(
    "listendrop_accept_queue_high_water",
    "Highest accept queue length over the last minute: observed by the eBPF hooks at SYNs, \
     handshakes and drops where the kernel allows them, and sampled (catches stalls shorter \
     than the scrape interval). For an SO_REUSEPORT group, the fullest member's.",
    LISTENER,
);
/// `listendrop_syn_queue_length`.
pub const SYN_LEN: Spec = gauge(
    "listendrop_syn_queue_length",
    "Half-open connections (SYN_RECV requests) of the listener now (shared by the members of \
     an SO_REUSEPORT group).",
    LISTENER,
);
/// `listendrop_reuseport_members`.
pub const REUSEPORT_MEMBERS: Spec = gauge(
    "listendrop_reuseport_members",
    "Sockets behind the listener: the members of its SO_REUSEPORT group, 1 for a plain \
     socket. Each member has its own accept queue; the queue gauges show the fullest.",
    LISTENER,
);
/// `listendrop_recent_drop_rate`.
pub const DROP_RATE: Spec = gauge(
    "listendrop_recent_drop_rate",
    "Drops per second of the listener over the last minute, as `listendrop status` shows it \
     (in PromQL prefer rate(listendrop_drops_total[1m])).",
    LISTENER,
);
/// `listendrop_listener_info`.
pub const INFO: Spec = gauge(
    "listendrop_listener_info",
    "1 per listener: its owning process (the lowest pid among the holders of its sockets), \
     its name and cgroup, and the container and Kubernetes pod it runs in (empty for a host \
     process, or what a source could not tell). Join with group_left to show the owner \
     and pod next to any series.",
    INFO_LABELS,
);
/// `listendrop_sysctl`.
pub const SYSCTL: Spec = gauge(
    "listendrop_sysctl",
    "Listen-related sysctls of each network namespace (net.core.somaxconn, \
     net.ipv4.tcp_max_syn_backlog, tcp_abort_on_overflow, tcp_syncookies, \
     tcp_synack_retries).",
    &["netns", "name"],
);
/// `listendrop_probe_attached`.
pub const PROBE_ATTACHED: Spec = gauge(
    "listendrop_probe_attached",
    "1 when the hook is attached with this kind, 0 when the attempt failed (the log says \
     why).",
    &["probe", "kind"],
);
/// `listendrop_coverage`.
pub const COVERAGE: Spec = gauge(
    "listendrop_coverage",
    "1 when every event of this class is observable with the hooks this kernel allowed, 0 \
     when it is not (its counters then stay absent, not zero).",
    &["reason"],
);
/// `listendrop_build_info`.
pub const BUILD_INFO: Spec = gauge(
    "listendrop_build_info",
    "Always 1; the labels say which listendrop and which kernel.",
    &["version", "kernel"],
);
/// `listendrop_scrape_duration_seconds`.
pub const SCRAPE_DURATION: Spec = gauge(
    "listendrop_scrape_duration_seconds",
    "Time the previous /metrics request took to render.",
    &[],
);
/// `listendrop_inventory_duration_seconds`.
pub const INVENTORY_DURATION: Spec = gauge(
    "listendrop_inventory_duration_seconds",
    "Time the previous listener inventory pass took (sock_diag in every namespace, owners, \
     sysctls, counters, and rendering the per-listener families).",
    &[],
);
/// `listendrop_collector_success`.
pub const COLLECTOR_SUCCESS: Spec = gauge(
    "listendrop_collector_success",
    "1 when the collector read its source at this scrape, 0 when it failed (the log says \
     why; its families are then absent).",
    &["collector"],
);

/// The family a class of event is counted in: drops in [`DROPS`], the others in their own.
pub const fn family_of(reason: Reason) -> &'static Spec {
    match reason {
        Reason::SyncookieSent => &SYNCOOKIES,
        Reason::SynackRetransmit => &SYNACK_RETRANSMITS,
        Reason::OverflowReset => &OVERFLOW_RESETS,
        _ => &DROPS,
    }
}

/// The container labels of [`INFO`] (`container_runtime`, `container_id`, `container`,
/// `image`, `pod`, `pod_namespace`, `pod_uid`, `pod_qos`): empty for a host process.
pub fn container_values(container: Option<&ContainerIdentity>) -> [String; 8] {
    let Some(c) = container else {
        return Default::default();
    };
    [
        c.runtime.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        c.id.clone(),
        c.name.clone(),
        c.image.clone(),
        c.pod_name.clone(),
        c.pod_namespace.clone(),
        c.pod_uid.clone(),
        c.qos.map(|q| q.as_str().to_owned()).unwrap_or_default(),
    ]
}

/// The label values of a listener, in [`LISTENER`] order.
pub fn listener_values(id: &ListenerId) -> [String; 4] {
    [
        id.netns.to_string(),
        id.family().as_str().to_owned(),
        id.addr.to_string(),
        id.port.to_string(),
    ]
}
