//! `deploy/prometheus/alerts.yml`: promtool's syntax check, its unit tests
//! (`alerts_test.yml`: each alert firing and not firing), and its metric names against
//! the real daemon.

use std::{collections::BTreeSet, process::Command};

use crate::{names, support::require_root, tools};

fn rules() -> Vec<serde_json::Value> {
    let doc = tools::yaml(&tools::deploy("prometheus/alerts.yml"));
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    let Some(promtool) =
        tools::require("alert_rules_pass_promtool_check", "promtool", "prometheus")
    else {
        return;
    };
    let out = tools::output(
        Command::new(promtool)
            .args(["check", "rules"])
            .arg(tools::deploy("prometheus/alerts.yml")),
    );
    let printed = tools::text(&out);
    println!("{}", printed.trim());
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("SUCCESS"), "{printed}");
    assert!(!printed.to_lowercase().contains("warning"), "{printed}");
}

#[test]
fn alert_rules_unit_tests_pass() {
    let test = "alert_rules_unit_tests_pass";
    let Some(promtool) = tools::require(test, "promtool", "prometheus") else {
        return;
    };
    if !tools::require_python(test) {
        return;
    }
    let out = tools::output(
        Command::new(promtool)
            .args(["test", "rules"])
            .arg(tools::deploy("prometheus/alerts_test.yml")),
    );
    let printed = tools::text(&out);
    println!("{}", printed.trim());
    assert!(
        out.status.success() && printed.contains("SUCCESS"),
        "{printed}"
    );

    // Every alert is tested both firing and not firing.
    let tests = tools::yaml(&tools::deploy("prometheus/alerts_test.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            let fired = check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            if fired {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for rule in rules() {
        let alert = rule["alert"].as_str().expect("alerting rules only");
        assert!(firing.contains(alert), "{alert}: no test where it fires");
        assert!(
            quiet.contains(alert),
            "{alert}: no test where it stays quiet"
        );
    }
}

#[test]
fn alert_rules_have_severity_and_descriptions() {
    if !tools::require_python("alert_rules_have_severity_and_descriptions") {
        return;
    }
    let rules = rules();
    let alerts: Vec<_> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "ListendropListenerDroppingConnections",
        "ListendropAcceptQueueSaturated",
        "ListendropSyncookiesSent",
        "ListendropNoProbeAttached",
        "ListendropCoverageLost",
        "ListendropEventsLost",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing");
    }
    for rule in &rules {
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["info", "warning", "critical"].contains(&severity),
            "{rule}"
        );
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        assert!(rule["annotations"]["description"].is_string(), "{rule}");
    }
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let test = "alert_rules_use_only_exported_metrics";
    if !require_root(test) || !tools::require_python(test) {
        return;
    }
    let used: BTreeSet<String> = rules()
        .iter()
        .flat_map(|r| names::in_expr(r["expr"].as_str().unwrap()))
        .collect();
    names::check("alerts.yml", &used);
}

#[test]
fn listener_alerts_name_the_pod() {
    if !tools::require_python("listener_alerts_name_the_pod") {
        return;
    }
    for rule in rules() {
        let alert = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().unwrap();
        if !expr.contains("listen_port") {
            continue;
        }
        // The pod comes from the info series (group_left), and a listener without one
        // still alerts (`or on`).
        assert!(
            expr.contains("group_left (pod_namespace, pod, container)")
                && expr.contains("listendrop_listener_info")
                && expr.contains("or on ("),
            "{alert}: {expr}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap();
            assert!(
                text.contains("$labels.pod ") && text.contains("$labels.pod_namespace"),
                "{alert} {annotation}: {text}"
            );
        }
    }
}
