//! `deploy/grafana/listendrop.json`: well-formed, every query valid PromQL (promtool), and
//! every metric it queries exported by the real daemon.

use std::{
    collections::{BTreeSet, HashSet},
    process::Command,
};

use serde_json::Value;

use crate::{names, support::require_root, tools};

fn dashboard() -> Value {
    let text = std::fs::read_to_string(tools::deploy("grafana/listendrop.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        all.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested.iter().cloned());
        }
    }
    all
}

/// (panel title, expression) of every query, variables included.
fn expressions(dash: &Value) -> Vec<(String, String)> {
    let mut exprs: Vec<(String, String)> = panels(dash)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(EXPR, label): the selector inside is PromQL.
            if let Some(inner) = q.strip_prefix("label_values(") {
                let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
                exprs.push((
                    format!("${}", var["name"].as_str().unwrap()),
                    selector.to_owned(),
                ));
            }
        }
    }
    exprs
}

/// Grafana's variables replaced by values Prometheus accepts.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$port", ".*")
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dash = dashboard();
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<_> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(vars.contains(&"datasource".to_owned()), "{vars:?}");
    let mut ids = HashSet::new();
    let mut covers = BTreeSet::new();
    for panel in panels(&dash) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let pos = &panel["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && pos["h"].as_u64().unwrap() > 0,
            "{}",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        let mut refs = HashSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{}",
                panel["title"]
            );
            assert!(!t["expr"].as_str().unwrap().is_empty());
            covers.extend(names::in_expr(t["expr"].as_str().unwrap()));
        }
    }
    // What the dashboard is for.
    for metric in [
        "listendrop_drops_total",
        "listendrop_dropped_handshakes_total",
        "listendrop_synack_retransmits_total",
        "listendrop_accept_queue_length",
        "listendrop_accept_queue_limit",
        "listendrop_probe_attached",
        "listendrop_coverage",
        "listendrop_listener_info",
    ] {
        assert!(covers.contains(metric), "no panel shows {metric}");
    }
    // Drops are shown by pod: the counters joined with the owner's pod (the counters
    // themselves carry no pod label).
    let by_pod = panels(&dash).iter().any(|p| {
        p["targets"].as_array().into_iter().flatten().any(|t| {
            let expr = t["expr"].as_str().unwrap_or("");
            expr.contains("listendrop_drops_total")
                && expr.contains("group_left (pod_namespace, pod, container)")
                && expr.contains("listendrop_listener_info")
        })
    });
    assert!(by_pod, "no panel shows drops by pod");
}

#[test]
fn grafana_queries_are_valid_promql() {
    let Some(promtool) =
        tools::require("grafana_queries_are_valid_promql", "promtool", "prometheus")
    else {
        return;
    };
    // One recording rule per query: `promtool check rules` parses each expression.
    let exprs = expressions(&dashboard());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(&substitute(expr)).unwrap();
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    let tmp = tools::TempDir::new("grafana");
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = tools::output(Command::new(promtool).args(["check", "rules"]).arg(&file));
    let printed = tools::text(&out);
    assert!(out.status.success(), "{printed}\n{rules}");
    println!(
        "{} dashboard queries parse: {}",
        exprs.len(),
        printed.trim()
    );
}

#[test]
fn grafana_dashboard_uses_only_exported_metrics() {
    if !require_root("grafana_dashboard_uses_only_exported_metrics") {
        return;
    }
    let used: BTreeSet<String> = expressions(&dashboard())
        .iter()
        .flat_map(|(_, e)| names::in_expr(e))
        .collect();
    names::check("grafana/listendrop.json", &used);
}
