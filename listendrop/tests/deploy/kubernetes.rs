//! `deploy/kubernetes/`: validated offline against the Kubernetes API schemas
//! (kubernetes-validate, which bundles them; `--strict` rejects unknown fields) and, for
//! the Prometheus Operator's ServiceMonitor, against a JSON schema written for these tests
//! (`servicemonitor.schema.json`, checked with python-jsonschema); then checked to fit
//! together and to match the systemd unit's privileges.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

use crate::{
    support::{daemon::Daemon, require_root},
    systemd::unit_capabilities,
    tools::{self, TempDir},
};

const CORE: [&str; 2] = ["daemonset.yaml", "service.yaml"];

/// kubernetes-validate --strict on `files`: (success, everything printed).
fn kubernetes_validate(program: &Path, files: &[&Path]) -> (bool, String) {
    let out = tools::output(
        Command::new(program)
            .args(["--strict", "--no-warn"])
            .args(files),
    );
    (out.status.success(), tools::text(&out))
}

/// Validates `file` against the ServiceMonitor schema: every error, one a line.
fn servicemonitor_errors(file: &Path) -> String {
    let out = tools::output(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, yaml, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 jsonschema.Draft202012Validator.check_schema(schema)\n\
                 v = jsonschema.Draft202012Validator(schema)\n\
                 for doc in yaml.safe_load_all(open(sys.argv[2])):\n\
                 \x20   for e in v.iter_errors(doc):\n\
                 \x20       print('/'.join(map(str, e.absolute_path)) + ': ' + e.message)\n",
            )
            .arg(tools::own("servicemonitor.schema.json"))
            .arg(file),
    );
    assert!(out.status.success(), "{}", tools::text(&out));
    tools::text(&out)
}

#[test]
fn kubernetes_manifests_validate() {
    let test = "kubernetes_manifests_validate";
    let Some(validate) = tools::require(test, "kubernetes-validate", "PyPI kubernetes-validate")
    else {
        return;
    };
    if !tools::require_python(test) {
        return;
    }
    for file in CORE {
        let path = tools::deploy(&format!("kubernetes/{file}"));
        let (ok, printed) = kubernetes_validate(&validate, &[&path]);
        println!("{}", printed.trim());
        assert!(ok && printed.contains("passed"), "{file}:\n{printed}");
        assert!(!printed.contains("ERROR"), "{file}:\n{printed}");
    }
    let monitor = tools::deploy("kubernetes/servicemonitor.yaml");
    let errors = servicemonitor_errors(&monitor);
    assert!(errors.trim().is_empty(), "servicemonitor.yaml:\n{errors}");

    // Both validators reject what they should: an unknown field, a wrong type.
    let tmp = TempDir::new("k8s");
    let bad = tmp.path().join("daemonset.yaml");
    let text = std::fs::read_to_string(tools::deploy("kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFilesystm:"),
    )
    .unwrap();
    let (ok, printed) = kubernetes_validate(&validate, &[&bad]);
    assert!(
        !ok && printed.contains("readOnlyRootFilesystm"),
        "{printed}"
    );
    let bad = tmp.path().join("servicemonitor.yaml");
    let text = std::fs::read_to_string(&monitor).unwrap();
    std::fs::write(&bad, text.replace("interval: 30s", "interval: 30 seconds")).unwrap();
    assert!(servicemonitor_errors(&bad).contains("interval"));
    std::fs::write(&bad, text.replace("targetLabel:", "targetLabl:")).unwrap();
    assert!(servicemonitor_errors(&bad).contains("targetLabl"));
}

fn manifest(file: &str) -> Value {
    tools::yaml(&tools::deploy(&format!("kubernetes/{file}")))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn kubernetes_manifests_fit_together() {
    if !tools::require_python("kubernetes_manifests_fit_together") {
        return;
    }
    let ds = manifest("daemonset.yaml");
    let svc = manifest("service.yaml");
    let mon = manifest("servicemonitor.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // Privileges: the systemd unit's capabilities, nothing else.
    assert_eq!(
        pod["hostNetwork"], true,
        "serves on the node, sees host listeners"
    );
    assert_eq!(
        pod["hostPID"], true,
        "listener owners and pod namespaces via /proc"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    let unit: BTreeSet<String> = unit_capabilities()
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        unit,
        "same set as the systemd unit"
    );

    // Mounts: BTF and tracefs read-only, the pin directory (the daemon's default
    // --pin-dir) writable, each from a hostPath volume.
    let volumes = pod["volumes"].as_array().unwrap();
    for (path, read_only) in [
        ("/sys/kernel/btf", true),
        ("/sys/kernel/tracing", true),
        ("/sys/fs/bpf/listendrop", false),
    ] {
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(
            mount["readOnly"].as_bool().unwrap_or(false),
            read_only,
            "{path}"
        );
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        assert_eq!(volume["hostPath"]["path"], path);
    }

    // Serving: 0.0.0.0:9477, port `metrics`, probes on /healthz, resources bounded.
    let args = strings(&c["args"]);
    assert!(
        args.contains("--web.listen-address=0.0.0.0:9477"),
        "{args:?}"
    );
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("container port `metrics`");
    assert_eq!(port["containerPort"], 9477);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }

    // The Service selects the pods, headless, port `metrics`.
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}");
    }
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["name"], "metrics");
    assert_eq!(svc_port["targetPort"], "metrics");
    assert_eq!(svc["metadata"]["namespace"], ds["metadata"]["namespace"]);

    // The ServiceMonitor selects the Service, in its namespace, on port `metrics`.
    let svc_labels = svc["metadata"]["labels"].as_object().unwrap();
    for (k, v) in mon["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(svc_labels.get(k), Some(v), "ServiceMonitor selector {k}");
    }
    assert!(strings(&mon["spec"]["namespaceSelector"]["matchNames"])
        .contains(svc["metadata"]["namespace"].as_str().unwrap()));
    assert_eq!(mon["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(mon["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn daemonset_args_start_the_daemon() {
    let test = "daemonset_args_start_the_daemon";
    if !require_root(test) || !tools::require_python(test) {
        return;
    }
    let ds = manifest("daemonset.yaml");
    // Every argument but the address (the test serves on a free loopback port).
    let args: Vec<String> = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .filter(|a| !a.starts_with("--web.listen-address"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args);
    assert_eq!(daemon.get("/healthz").0, 200);
    assert!(daemon.stop().success());
}
