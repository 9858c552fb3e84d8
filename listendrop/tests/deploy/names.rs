//! Which `listendrop_*` metric names the dashboard and the alerts use, and which the real
//! daemon exports.

use std::{collections::BTreeSet, sync::OnceLock};

use crate::{
    scenario,
    support::{
        daemon::{value, Daemon},
        netns::Netns,
    },
};

/// Counters that exist only on kernels where their class of event is observable
/// (`listendrop_coverage{reason}`), with that reason.
const KERNEL_DEPENDENT: &[(&str, &str)] = &[
    ("listendrop_syncookies_sent_total", "syncookie_sent"),
    ("listendrop_synack_retransmits_total", "synack_retransmit"),
    ("listendrop_overflow_resets_total", "overflow_reset"),
];

/// Every `listendrop_*` name in a PromQL expression.
pub fn in_expr(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices("listendrop_") {
        if expr[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let name: String = expr[at..].chars().take_while(|&c| ident(c)).collect();
        names.insert(name);
    }
    names
}

/// What the real daemon exported after drops of every kind this kernel shows.
pub struct Exported {
    /// Metric names, as in PromQL (counters with `_total`).
    pub names: BTreeSet<String>,
    /// `listendrop_coverage` reasons that are 0 here.
    pub unobservable: BTreeSet<String>,
    /// The /metrics body.
    pub body: String,
}

/// Names from `# TYPE` lines: counters are exported with `_total` in this text format,
/// but accept one without it too; histograms and summaries add their series.
pub fn type_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let mut it = line.split_whitespace();
        if (it.next(), it.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        match kind {
            "counter" if !name.ends_with("_total") => {
                names.insert(format!("{name}_total"));
            }
            "histogram" | "summary" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
    }
    names
}

/// Starts the real daemon once per test process, makes ACK-time overflows (with and
/// without `tcp_abort_on_overflow`) so that the lazily created per-listener counters
/// exist, and keeps what it exported.
pub fn exported() -> &'static Exported {
    static EXPORTED: OnceLock<Exported> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let daemon = Daemon::start(&[]);
        let ns = Netns::new("names");
        scenario::ack_overflows(&ns);
        let reset = Netns::new("namesrst");
        reset.sysctl("net.ipv4.tcp_abort_on_overflow", "1");
        scenario::ack_overflows(&reset);
        let (status, body) = daemon.get("/metrics");
        assert_eq!(status, 200, "{body}");
        let unobservable = daemon
            .metrics()
            .iter()
            .filter(|s| s.metric == "listendrop_coverage" && value(s) == 0.0)
            .filter_map(|s| s.labels.get("reason").map(str::to_owned))
            .collect();
        assert!(daemon.stop().success());
        Exported {
            names: type_names(&body),
            unobservable,
            body,
        }
    })
}

/// Asserts that every name in `used` is exported, or kernel-dependent and not observable
/// here (printed).
pub fn check(what: &str, used: &BTreeSet<String>) {
    assert!(!used.is_empty(), "{what}: no listendrop_* metric found");
    let exported = exported();
    let mut missing = Vec::new();
    for name in used {
        if exported.names.contains(name) {
            continue;
        }
        let kernel = KERNEL_DEPENDENT
            .iter()
            .find(|(metric, _)| metric == name)
            .filter(|(_, reason)| exported.unobservable.contains(*reason));
        if let Some((_, reason)) = kernel {
            println!("{what}: {name} is not observable on this kernel (coverage {reason} = 0)");
            continue;
        }
        missing.push(name.clone());
    }
    assert!(
        missing.is_empty(),
        "{what} uses metrics the daemon does not export: {missing:?}\nexported: {:?}",
        exported.names
    );
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = in_expr(
        "sum by (x) (rate(listendrop_drops_total{job=\"listendrop\"}[5m])) / \
         (listendrop_accept_queue_limit > 0) + foo_listendrop_bar",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["listendrop_accept_queue_limit", "listendrop_drops_total"]
    );
    let types = type_names("# TYPE a_total counter\n# TYPE b counter\n# TYPE c gauge\n");
    assert!(types.contains("a_total") && types.contains("b_total") && types.contains("c"));
}
