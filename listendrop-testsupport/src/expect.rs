//! Assertions that compare what listendrop reports for one namespace with the kernel's own
//! counters of that namespace.

use prometheus_parse::Sample;

use super::{
    daemon::{sum, value, Daemon},
    netns::Netns,
};

/// Whether the kernel under test must show every class (VM kernels with kprobes and
/// fentry); set by `cargo xtask vm-test`.
pub fn full_coverage_expected() -> bool {
    std::env::var_os("LISTENDROP_EXPECT_FULL_COVERAGE").is_some()
}

/// `listendrop_coverage{reason}` as a bool.
pub fn covered(metrics: &[Sample], reason: &str) -> bool {
    let value = sum(metrics, "listendrop_coverage", &[("reason", reason)]);
    assert!(
        metrics
            .iter()
            .any(|s| s.metric == "listendrop_coverage" && s.labels.get("reason") == Some(reason)),
        "listendrop_coverage{{reason={reason}}} missing"
    );
    value == 1.0
}

/// Asserts that `metric{netns, reason}` equals the kernel's count when the class is
/// covered here (or falls short by no more than the program runs the kernel skipped, or,
/// for ACK-time drops, by exactly the frees the kernel handed to no eBPF program, as an
/// independent witness shows: [`crate::witness`]), and that it is absent (not a fake
/// zero) when it is not. Returns whether it was covered.
pub fn counted(
    metrics: &[Sample],
    ns: &Netns,
    metric: &str,
    reason: &str,
    extra: &[(&str, &str)],
    kernel: u64,
    what: &str,
) -> bool {
    let netns = ns.inode.to_string();
    let mut labels = vec![("netns", netns.as_str())];
    if metric == "listendrop_drops_total" || metric == "listendrop_dropped_handshakes_total" {
        labels.push(("reason", reason));
    }
    labels.extend_from_slice(extra);
    let ours = sum(metrics, metric, &labels);
    if covered(metrics, reason) {
        let withheld = (metric == "listendrop_drops_total" && reason == "ack_accept_queue_full")
            .then(|| {
                let port = extra
                    .iter()
                    .find(|(k, _)| *k == "listen_port")
                    .and_then(|(_, p)| p.parse().ok());
                crate::witness::withheld(ns.inode, port, ours as u64, kernel)
            })
            .flatten();
        if let Some(why) = withheld {
            println!("{metric}{labels:?}: {ours} of {kernel}: {why}");
        } else if ours != kernel as f64 {
            // Kprobe programs can be skipped (another kprobe or tracepoint program, or a
            // map syscall, active on the CPU): exact then means every one not counted is
            // among the runs the kernel says it skipped.
            let missed = sum(metrics, "listendrop_bpf_missed_total", &[]);
            assert!(
                ours < kernel as f64 && kernel as f64 - ours <= missed,
                "{metric}{labels:?} {ours} vs kernel {what} {kernel}, with {missed} program \
                 runs the kernel skipped; the programs' own errors (all listeners): {:?}; \
                 every drop series of the namespace: {:?}; its unattributed drops: {}; \
                 eBPF links attached or detached while scenarios counted: {:?}",
                errors(metrics),
                series(metrics, &netns),
                sum(
                    metrics,
                    "listendrop_unattributed_drops_total",
                    &[("netns", &netns)]
                ),
                crate::programs::changes_while_counting()
            );
            println!("{metric}{labels:?}: {ours} of {kernel}, {missed} runs skipped");
        }
        true
    } else {
        assert!(
            !full_coverage_expected(),
            "{reason} is not covered, but this kernel must show everything"
        );
        let present = metrics
            .iter()
            .any(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
        assert!(!present, "{metric}{labels:?} reported although not covered");
        println!("{reason}: not observable on this kernel (kernel counted {kernel} {what})");
        false
    }
}

/// The drop lines the daemon logged for `ns` with `reason`.
pub fn lines(daemon: &Daemon, ns: &Netns, reason: &str) -> Vec<String> {
    let netns = format!(" netns={} ", ns.inode);
    let reason = format!(" reason={reason} ");
    daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains(&netns) && l.contains(&reason))
        .collect()
}

/// The value of `key=` in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(&format!(" {key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .split(' ')
        .next()
        .unwrap()
}

/// The client port of a log line.
pub fn client_port(line: &str) -> u16 {
    field(line, "client")
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .port()
}

/// Waits (15 s at most) until the daemon's view of namespace `ns` reconciles with the
/// kernel's ListenDrops there (`kernel`, read with nstat after the scenario): its own
/// netstat series equals `kernel`, and what it attributed to listeners plus what it says
/// it could not attribute equals it too; where every class is seen, what it could not
/// attribute is no more than the losses it counted. Panics with the figures otherwise.
pub fn reconciled(daemon: &Daemon, ns: &Netns, kernel: u64) {
    let netns = ns.inode.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let m = daemon.metrics();
        let seen = sum(
            &m,
            "listendrop_kernel_netstat_total",
            &[("netns", &netns), ("counter", "TcpExtListenDrops")],
        );
        let attributed = sum(&m, "listendrop_drops_total", &[("netns", &netns)]);
        let unattributed = sum(
            &m,
            "listendrop_unattributed_drops_total",
            &[("netns", &netns)],
        );
        if seen == kernel as f64 && attributed + unattributed == kernel as f64 {
            if full_coverage_expected() {
                // Every class is seen here: what was not attributed, the daemon must have
                // counted as lost (a full counter map, a program run the kernel skipped).
                let losses = sum(&m, "listendrop_bpf_errors_total", &[("kind", "map_full")])
                    + sum(&m, "listendrop_bpf_missed_total", &[]);
                assert!(
                    unattributed <= losses,
                    "every class is seen on this kernel, yet {unattributed} drops were not \
                     attributed and {losses} losses were counted"
                );
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespace {netns}: kernel ListenDrops {kernel}, the daemon read {seen}; \
             attributed {attributed} + unattributed {unattributed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Every `listendrop_drops_total` series of namespace `netns` (port, reason, value), for
/// failure messages: a drop counted under another reason or listener shows here.
fn series(metrics: &[Sample], netns: &str) -> Vec<(String, String, f64)> {
    metrics
        .iter()
        .filter(|s| s.metric == "listendrop_drops_total")
        .filter(|s| s.labels.get("netns") == Some(netns))
        .map(|s| {
            let label = |k: &str| s.labels.get(k).unwrap_or_default().to_owned();
            (label("listen_port"), label("reason"), value(s))
        })
        .collect()
}

/// Every `listendrop_bpf_errors_total` by kind, for failure messages.
fn errors(metrics: &[Sample]) -> Vec<(String, f64)> {
    const METRIC: &str = "listendrop_bpf_errors_total";
    metrics
        .iter()
        .filter(|s| s.metric == METRIC)
        .filter_map(|s| s.labels.get("kind"))
        .map(|kind| (kind.to_owned(), sum(metrics, METRIC, &[("kind", kind)])))
        .collect()
}
