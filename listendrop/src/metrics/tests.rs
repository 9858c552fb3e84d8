//! The exposition, parsed back with an independent parser (prometheus-parse).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, Mutex},
};

use listendrop_common::{DropCount, Health, Reason};

use super::{
    kernel::{CounterSource, KernelCollector, NamespaceTotals},
    Metrics,
};
use crate::{
    counters::{CountersError, Snapshot},
    events::EventStats,
    filter::Filter,
    inventory::counters::KernelCounters,
    listener::{ListenerId, Netns},
    probes::{table, Hook, Kind},
};

/// Counters a test sets by hand.
#[derive(Default)]
struct Fake(Mutex<Snapshot>);

impl CounterSource for Fake {
    fn snapshot(&self) -> Result<Snapshot, CountersError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

fn id(addr: &str, port: u16) -> ListenerId {
    ListenerId {
        netns: Netns(4026532000),
        addr: addr.parse().unwrap(),
        port,
    }
}

fn set(fake: &Fake, id: ListenerId, reason: Reason, packets: u64, handshakes: u64) {
    fake.0
        .lock()
        .unwrap()
        .listeners
        .entry(id)
        .or_default()
        .insert(
            reason,
            DropCount {
                packets,
                handshakes,
                ..DropCount::default()
            },
        );
}

fn hooks() -> Vec<Hook> {
    vec![
        Hook {
            spec: table::hook("skb:kfree_skb").unwrap(),
            kind: Kind::Tracepoint,
            status: Ok(()),
        },
        Hook {
            spec: table::hook("tcp_conn_request").unwrap(),
            kind: Kind::Kprobe,
            status: Err("no kprobes".into()),
        },
    ]
}

struct Setup {
    fake: Arc<Fake>,
    pass: super::kernel::PassTotals,
    stats: Arc<EventStats>,
    metrics: Metrics,
}

fn setup(coverage: &[(Reason, bool)]) -> Setup {
    let fake = Arc::new(Fake::default());
    let pass = Arc::new(Mutex::new(Arc::new(Vec::new())));
    let stats = Arc::new(EventStats::default());
    let collector = KernelCollector::new(
        Arc::clone(&fake) as _,
        Arc::new(crate::probes::programs::Programs::default()),
        Arc::clone(&pass),
        Arc::clone(&stats),
        Filter::default(),
    )
    .unwrap();
    let metrics = Metrics::new(&hooks(), coverage, collector).unwrap();
    Setup {
        fake,
        pass,
        stats,
        metrics,
    }
}

fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
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
fn drops_are_rendered_per_listener_as_the_kernel_counts_them() {
    let s = setup(&[]);
    set(
        &s.fake,
        id("127.0.0.1", 7004),
        Reason::AckAcceptQueueFull,
        12,
        2,
    );
    set(&s.fake, id("::", 7005), Reason::SynAcceptQueueFull, 3, 1);
    let text = s.metrics.render();
    // The kernel's totals are what is shown: a later, larger total replaces the earlier.
    set(
        &s.fake,
        id("127.0.0.1", 7004),
        Reason::AckAcceptQueueFull,
        15,
        3,
    );
    let text2 = s.metrics.render();
    let all = samples(&text2);
    let drops: Vec<_> = all
        .iter()
        .filter(|s| s.metric == "listendrop_drops_total")
        .collect();
    assert_eq!(drops.len(), 2, "{text2}");
    let v4 = [
        ("listen_port", "7004"),
        ("family", "ipv4"),
        ("listen_addr", "127.0.0.1"),
    ];
    assert_eq!(
        find(&samples(&text), "listendrop_drops_total", &v4),
        Some(12.0)
    );
    assert_eq!(find(&all, "listendrop_drops_total", &v4), Some(15.0));
    assert_eq!(
        find(&all, "listendrop_dropped_handshakes_total", &v4),
        Some(3.0)
    );
    let v6 = [
        ("listen_port", "7005"),
        ("listen_addr", "::"),
        ("family", "ipv6"),
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
    let s = setup(&[]);
    set(&s.fake, id("127.0.0.1", 80), Reason::SyncookieSent, 5, 0);
    set(&s.fake, id("127.0.0.1", 80), Reason::SynackRetransmit, 4, 0);
    set(&s.fake, id("127.0.0.1", 80), Reason::OverflowReset, 2, 0);
    let all = samples(&s.metrics.render());
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
fn probes_coverage_health_and_namespace_totals_are_exported() {
    let coverage = [
        (Reason::AckAcceptQueueFull, true),
        (Reason::SynQueueFull, false),
    ];
    let s = setup(&coverage);
    {
        let mut snap = s.fake.0.lock().unwrap();
        snap.health[Health::RingBufferFull.index() as usize] = 7;
        snap.health[Health::RateLimited.index() as usize] = 9;
        snap.health[Health::MapFull.index() as usize] = 2;
        snap.health[Health::Read.index() as usize] = 1;
    }
    s.stats.received.store(40, Ordering::Relaxed);
    *s.pass.lock().unwrap() = Arc::new(vec![NamespaceTotals {
        netns: Netns(9),
        netstat: KernelCounters {
            listen_drops: 11,
            ..KernelCounters::default()
        },
        unattributed: 4,
    }]);
    let all = samples(&s.metrics.render());
    let check = |name: &str, labels: &[(&str, &str)], want: f64| {
        assert_eq!(find(&all, name, labels), Some(want), "{name}{labels:?}");
    };
    check(
        "listendrop_events_lost_total",
        &[("cause", "ring_buffer_full")],
        7.0,
    );
    check(
        "listendrop_events_lost_total",
        &[("cause", "rate_limited")],
        9.0,
    );
    check("listendrop_events_total", &[], 40.0);
    check("listendrop_bpf_errors_total", &[("kind", "map_full")], 2.0);
    check("listendrop_bpf_errors_total", &[("kind", "read")], 1.0);
    check(
        "listendrop_probe_attached",
        &[("probe", "skb:kfree_skb"), ("kind", "tracepoint")],
        1.0,
    );
    check(
        "listendrop_probe_attached",
        &[("probe", "tcp_conn_request")],
        0.0,
    );
    check(
        "listendrop_coverage",
        &[("reason", "ack_accept_queue_full")],
        1.0,
    );
    check("listendrop_coverage", &[("reason", "syn_queue_full")], 0.0);
    check("listendrop_build_info", &[], 1.0);
    check(
        "listendrop_kernel_netstat_total",
        &[("netns", "9"), ("counter", "TcpExtListenDrops")],
        11.0,
    );
    check(
        "listendrop_unattributed_drops_total",
        &[("netns", "9")],
        4.0,
    );
    check(
        "listendrop_collector_success",
        &[("collector", "kernel")],
        1.0,
    );
}

/// A listener expired (its counters deleted) while a scrape was in flight: that scrape
/// may still show it (it read the counters before), every later one never does. Nothing
/// is kept between scrapes, so nothing can bring it back.
#[test]
fn an_expired_listener_never_comes_back() {
    let s = setup(&[]);
    let gone = id("127.0.0.1", 7006);
    set(&s.fake, gone, Reason::AckAcceptQueueFull, 5, 1);
    set(
        &s.fake,
        id("127.0.0.1", 7007),
        Reason::AckAcceptQueueFull,
        1,
        1,
    );
    let port = [("listen_port", "7006")];
    // The in-flight scrape's snapshot, taken before the expiry...
    let in_flight = s.metrics.render();
    // ...the expiry deletes the listener's counters...
    s.fake.0.lock().unwrap().listeners.remove(&gone);
    // ...and the in-flight scrape completes with what it read.
    assert_eq!(
        find(&samples(&in_flight), "listendrop_drops_total", &port),
        Some(5.0)
    );
    for _ in 0..3 {
        let all = samples(&s.metrics.render());
        assert_eq!(find(&all, "listendrop_drops_total", &port), None);
        assert_eq!(
            find(&all, "listendrop_drops_total", &[("listen_port", "7007")]),
            Some(1.0)
        );
    }
}

/// Scrapers racing a counter that the kernel moves: each scraper sees every series
/// never decrease (nothing is added twice or applied out of order).
#[test]
fn concurrent_scrapes_never_see_a_counter_go_back() {
    let s = Arc::new(setup(&[]));
    let listener = id("127.0.0.1", 9000);
    let writer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            for packets in 1..=2000 {
                set(&s.fake, listener, Reason::AckAcceptQueueFull, packets, 1);
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut last = BTreeMap::new();
                for _ in 0..200 {
                    for sample in samples(&s.metrics.render()) {
                        if sample.metric == "listendrop_drops_total" {
                            let v = value(&sample);
                            let before = last.insert(sample.metric.clone(), v).unwrap_or(0.0);
                            assert!(v >= before, "went from {before} to {v}");
                        }
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let all = samples(&s.metrics.render());
    assert_eq!(find(&all, "listendrop_drops_total", &[]), Some(2000.0));
}

/// A pod's container (containerd) and an inventory of one namespace: an SO_REUSEPORT
/// group on 8080 (a worker, pid 300, and the pod's main process, pid 200) and a host
/// process on 22.
fn inventory_with_a_pod() -> crate::inventory::Snapshot {
    use crate::{
        inventory::{
            containers::{ContainerIdentity, Qos, Runtime},
            namespaces::Namespace,
            owners::Owner,
            sockdiag::ListenSocket,
            sysctls::Sysctls,
            Listener, NamespaceReport, Snapshot as Inventory,
        },
        listener::Family,
    };
    let pod = Arc::new(ContainerIdentity {
        runtime: Some(Runtime::Containerd),
        id: "4d6c".repeat(16),
        name: "nginx".into(),
        image: "localhost/bbhttpd:1".into(),
        pod_name: "web-1".into(),
        pod_namespace: "shop".into(),
        pod_uid: "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10".into(),
        qos: Some(Qos::BestEffort),
        rootless_user: None,
    });
    let listener =
        |port: u16, cookie: u64, pid: i32, container: Option<Arc<ContainerIdentity>>| Listener {
            socket: ListenSocket {
                family: Family::Ipv4,
                addr: "0.0.0.0".parse().unwrap(),
                port,
                inode: cookie,
                cookie,
                accept_queue_len: 0,
                accept_queue_limit: 9,
                sk_drops: Some(0),
                v6only: false,
                syn_recv: 0,
                syn_recv_shared_by: 1,
            },
            owner: Some(Owner {
                pid,
                comm: "httpd".into(),
                cgroup: "/kubepods/besteffort/pod5f0b/4d6c".into(),
                holders: 1,
                container,
            }),
            owner_busy: None,
            new_sk_drops: 0,
            diagnosis: Vec::new(),
        };
    Inventory {
        namespaces: vec![NamespaceReport {
            namespace: Namespace {
                inode: 4026532871,
                path: "/proc/1/ns/net".into(),
                names: Vec::new(),
                pid: Some(1),
                host: false,
            },
            sysctls: Sysctls::default(),
            counters: KernelCounters::default(),
            listeners: vec![
                // An SO_REUSEPORT group: a worker (pid 300) and the pod's main process.
                listener(8080, 1, 300, None),
                listener(8080, 2, 200, Some(Arc::clone(&pod))),
                listener(22, 3, 100, None),
            ],
            unattributed_syn_recv: 0,
        }],
        skipped: Vec::new(),
    }
}

/// The inventory's info series: one per listener, the owner's container and pod as
/// labels (empty for a host process), an SO_REUSEPORT group's owner being its lowest pid.
#[test]
fn listener_info_names_the_owners_container_and_pod() {
    use crate::context::Context;
    let inventory = inventory_with_a_pod();
    let mut ctx = Context::default();
    ctx.refresh(
        inventory,
        &Snapshot::default(),
        std::collections::HashMap::new(),
        std::time::Instant::now(),
    );
    let s = setup(&[]);
    s.metrics
        .update_inventory(&ctx, &Filter::default(), std::time::Instant::now());
    let all = samples(&s.metrics.render());
    let info = |port: &str| -> Vec<&prometheus_parse::Sample> {
        all.iter()
            .filter(|x| x.metric == "listendrop_listener_info")
            .filter(|x| x.labels.get("listen_port") == Some(port))
            .collect()
    };
    let web = info("8080");
    assert_eq!(web.len(), 1, "one series per listener: {web:#?}");
    let label = |k: &str| web[0].labels.get(k).unwrap_or("<absent>").to_owned();
    assert_eq!(label("pid"), "200", "the group's lowest pid");
    assert_eq!(label("container_runtime"), "containerd");
    assert_eq!(label("container_id"), "4d6c".repeat(16));
    assert_eq!(label("container"), "nginx");
    assert_eq!(label("image"), "localhost/bbhttpd:1");
    assert_eq!(label("pod"), "web-1");
    assert_eq!(label("pod_namespace"), "shop");
    assert_eq!(label("pod_uid"), "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10");
    assert_eq!(label("pod_qos"), "BestEffort");
    let host = info("22");
    assert_eq!(host.len(), 1);
    for key in ["container_id", "container", "pod", "pod_namespace", "image"] {
        // Empty labels are absent from the exposition, as Prometheus treats them.
        assert_eq!(host[0].labels.get(key).unwrap_or(""), "", "{key}");
    }
    // The counter families keep their label set: the pod comes with group_left.
    assert_eq!(
        super::names::DROPS.labels,
        ["netns", "family", "listen_addr", "listen_port", "reason"]
    );
}
