//! `deploy/kubernetes/`: validated offline against the Kubernetes API schemas
//! (kubernetes-validate, which bundles them; `--strict` rejects unknown fields) and, for
//! the Prometheus Operator's ServiceMonitor, against a JSON schema written for these tests
//! (`servicemonitor.schema.json`, checked with python-jsonschema); then checked to fit
//! together and to match the systemd unit's privileges.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

use rustls::pki_types::ServerName;

use crate::{
    support::{
        daemon::{binary, run_to_exit, Daemon},
        require_root,
    },
    systemd::unit_capabilities,
    tools::{self, TempDir},
    web::{basic, https_get_as, Pki},
};

const CORE: [&str; 3] = ["daemonset.yaml", "service.yaml", "web-secrets.yaml"];

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

/// Privileges: the systemd unit's capabilities, nothing else; host network and PIDs.
fn privileges_as_the_unit(pod: &Value, c: &Value) {
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
}

/// Mounts: BTF and tracefs read-only, the pin directory (the daemon's default --pin-dir)
/// writable, each from a hostPath volume.
fn host_paths_mounted(pod: &Value, c: &Value) {
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
}

/// Serving: 0.0.0.0:9477, port `metrics`, probes on the port, resources bounded.
fn serves_on_port_metrics(c: &Value) {
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
    // /healthz needs TLS and basic auth like /metrics, which kubelet cannot give: the
    // probes connect to the port.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["tcpSocket"]["port"], "metrics", "{probe}");
    }
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }
}

/// The Service selects the pods, headless, port `metrics`; the ServiceMonitor selects the
/// Service, in its namespace, on port `metrics`.
fn service_and_monitor_select_the_pods(ds: &Value, svc: &Value, mon: &Value) {
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

    let svc_labels = svc["metadata"]["labels"].as_object().unwrap();
    for (k, v) in mon["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(svc_labels.get(k), Some(v), "ServiceMonitor selector {k}");
    }
    assert!(strings(&mon["spec"]["namespaceSelector"]["matchNames"])
        .contains(svc["metadata"]["namespace"].as_str().unwrap()));
    assert_eq!(mon["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(mon["spec"]["endpoints"][0]["path"], "/metrics");
}

/// The secure endpoint: the DaemonSet's web configuration, the Secrets it comes from and
/// the ServiceMonitor's TLS and credentials fit together.
fn monitor_meets_the_secure_endpoint(ds: &Value, mon: &Value) {
    let web = SecureEndpoint::of(ds, mon);
    let endpoint = &mon["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    for key in ["tls_server_config.cert_file", "tls_server_config.key_file"] {
        let (section, field) = key.split_once('.').unwrap();
        let file = web.config[section][field].as_str().unwrap();
        assert!(
            web.tls_items.contains(file),
            "{key} {file} is not projected from the TLS Secret: {:?}",
            web.tls_items
        );
    }
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["secret"]["name"], web.tls_secret,
        "the ServiceMonitor trusts the CA of the daemons' certificate"
    );
    assert!(!web.server_name.is_empty(), "tlsConfig.serverName");
    let auth = &endpoint["basicAuth"];
    for part in ["username", "password"] {
        assert_eq!(auth[part]["name"], "listendrop-scrape", "basicAuth.{part}");
        assert!(web.scrape[auth[part]["key"].as_str().unwrap()].is_string());
    }
    assert!(
        web.config["basic_auth_users"][web.scrape["username"].as_str().unwrap()].is_string(),
        "the ServiceMonitor's user is one of basic_auth_users"
    );
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
    privileges_as_the_unit(pod, c);
    host_paths_mounted(pod, c);
    serves_on_port_metrics(c);
    service_and_monitor_select_the_pods(&ds, &svc, &mon);
    monitor_meets_the_secure_endpoint(&ds, &mon);
}

/// The DaemonSet's secure endpoint as the manifests describe it.
struct SecureEndpoint {
    /// The argument's path, the mount's directory.
    config_path: String,
    /// web-config.yml of the Secret, as text and as a document.
    config_text: String,
    config: Value,
    /// The TLS Secret projected beside it, and the files taken from it.
    tls_secret: String,
    tls_items: BTreeSet<String>,
    /// What the ServiceMonitor checks the certificate against.
    server_name: String,
    /// The listendrop-scrape Secret's data.
    scrape: Value,
}

impl SecureEndpoint {
    fn of(ds: &Value, mon: &Value) -> Self {
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let config_path = strings(&c["args"])
            .iter()
            .find_map(|a| a.strip_prefix("--web.config.file=").map(str::to_owned))
            .expect("the DaemonSet passes --web.config.file");
        let (dir, file) = config_path.rsplit_once('/').unwrap();
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{dir} not mounted"));
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let sources = volume["projected"]["sources"].as_array().unwrap();
        let secrets = tools::yaml_documents(&tools::deploy("kubernetes/web-secrets.yaml"));
        let secret = |name: &str| {
            secrets
                .iter()
                .find(|s| s["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no Secret {name} in web-secrets.yaml"))
                .clone()
        };
        // The web configuration Secret (all its keys), then the TLS one (some keys).
        let config_secret = sources[0]["secret"]["name"].as_str().unwrap();
        let config_text = secret(config_secret)["stringData"][file]
            .as_str()
            .unwrap_or_else(|| panic!("{config_secret} has no {file}"))
            .to_owned();
        let config: Value = serde_saphyr::from_str(&config_text).expect("web-config.yml is YAML");
        let tls_secret = sources[1]["secret"]["name"].as_str().unwrap().to_owned();
        let tls_items = sources[1]["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_owned())
            .collect();
        let server_name = mon["spec"]["endpoints"][0]["tlsConfig"]["serverName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        for s in &secrets {
            assert_eq!(s["metadata"]["namespace"], ds["metadata"]["namespace"]);
        }
        Self {
            config_path,
            config_text,
            config,
            tls_secret,
            tls_items,
            server_name,
            scrape: secret("listendrop-scrape")["stringData"].clone(),
        }
    }
}

#[test]
fn daemonset_args_start_the_daemon() {
    let test = "daemonset_args_start_the_daemon";
    if !require_root(test) || !tools::require_python(test) {
        return;
    }
    let ds = manifest("daemonset.yaml");
    let web = SecureEndpoint::of(&ds, &manifest("servicemonitor.yaml"));
    // The Secrets' files in a directory of the test's own: the web configuration with a
    // hash of a test password in place of the placeholder, a certificate for the
    // ServiceMonitor's serverName.
    let pki = Pki::new();
    pki.issue_server_for(1, &[&web.server_name], "tls");
    let password = "scrape-password";
    let user = web.scrape["username"].as_str().unwrap();
    let config_path = pki.path("web-config.yml");
    let placeholder = "REPLACE-WITH-THE-BCRYPT-HASH";
    assert!(web.config_text.contains(placeholder));
    std::fs::write(
        &config_path,
        web.config_text
            .replace(placeholder, &bcrypt::hash(password, 4).unwrap()),
    )
    .unwrap();
    // Every argument but the address (the test serves on a free loopback port), with
    // that directory for the mount's.
    let args: Vec<String> = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .filter(|a| !a.starts_with("--web.listen-address"))
        .map(|a| a.replace(&web.config_path, config_path.to_str().unwrap()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args);
    let name = ServerName::try_from(web.server_name.clone()).unwrap();
    let get = |authorization: Option<&str>| {
        https_get_as(
            daemon.addr,
            name.clone(),
            &pki.path("ca.crt"),
            None,
            "/healthz",
            authorization,
        )
        .unwrap()
        .status
    };
    assert_eq!(
        get(Some(&basic(user, password))),
        200,
        "the ServiceMonitor's way"
    );
    assert_eq!(get(None), 401);
    assert!(daemon.stop().success());

    // As shipped, the placeholder stops the daemon with the way to make a hash.
    std::fs::write(&config_path, &web.config_text).unwrap();
    let failure = run_to_exit(Command::new(binary()).args(&args).args([
        "--web.listen-address",
        "127.0.0.1:0",
        "--no-pin",
    ]));
    assert_eq!(failure.code, Some(1), "{}", failure.stderr);
    assert!(
        failure.stderr.contains("not a bcrypt hash") && failure.stderr.contains("htpasswd"),
        "{}",
        failure.stderr
    );
}
