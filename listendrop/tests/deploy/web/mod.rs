//! The secure endpoint (`--web.config.file`, the exporter-toolkit format) end to end: a
//! CA, server and client certificates made at test time (rcgen), the real daemon serving
//! TLS, a real Prometheus scraping it with basic auth or a client certificate and storing
//! what the kernel counted; wrong credentials get 401, plain HTTP, a client without the
//! required certificate and a handshake that never ends are refused; a rotated
//! certificate is served without a restart; a bad file stops the daemon at start.

mod client;
mod pki;

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

pub use client::{basic, https_get_as};
use pki::replace;
pub use pki::Pki;

use client::{assert_plain_http_refused, assert_stalled_handshake_is_cut, https_get};

use crate::{
    prometheus::{now, Server},
    scenario,
    support::{
        daemon::{binary, run_to_exit, Daemon},
        netns::Netns,
        require_root,
    },
    tools::{self, TempDir},
};

/// Runs the ACK overflow scenario and waits until Prometheus stored a scrape taken after
/// it; then asserts what it stored for the namespace equals the kernel's count.
fn assert_prometheus_stores_the_kernel_count(prom: &Server) {
    let ns = Netns::new("web");
    let (overflows, account) = scenario::ack_overflows_accounted(&ns);
    prom.wait_for_scrape_after(now());
    let query = format!("sum(listendrop_drops_total{{netns=\"{}\"}})", ns.inode);
    let result = prom.query(&query);
    assert_eq!(result.len(), 1, "{query}: {result:?}\n{}", prom.log());
    println!(
        "{query} = {} in Prometheus; kernel ListenOverflows delta = {overflows}",
        result[0].1
    );
    let port = None; // the scenario's listener is the namespace's only one that drops
    if let Some(why) =
        crate::support::witness::withheld(ns.inode, port, result[0].1 as u64, overflows)
    {
        println!("{why}");
    } else if result[0].1 != overflows as f64 {
        // What the daemon says of the difference: misses the kernel counted, drops it saw
        // in the kernel's counters but could not attribute, and every series of the
        // namespace.
        let context = [
            "listendrop_bpf_missed_total".to_owned(),
            "listendrop_bpf_errors_total".to_owned(),
            format!(
                "listendrop_unattributed_drops_total{{netns=\"{}\"}}",
                ns.inode
            ),
            format!("{{netns=\"{}\"}}", ns.inode),
        ]
        .map(|q| format!("{q}: {:?}", prom.query(&q)));
        panic!(
            "Prometheus vs ListenOverflows: {} stored, {overflows} in the kernel ({account})\n{}\n\
             eBPF links attached or detached while scenarios counted: {:?}",
            result[0].1,
            context.join("\n"),
            crate::support::programs::changes_while_counting()
        );
    }
    let up = prom.query("up{job=\"listendrop\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0, "the target is up");
}

/// A Prometheus scrape job for the daemon at `addr` over HTTPS, with `extra` YAML lines
/// (indented for the job: tls_config, basic_auth).
fn https_job(addr: SocketAddr, extra: &str) -> String {
    format!(
        "scrape_configs:\n  - job_name: listendrop\n    scheme: https\n{extra}    \
         static_configs:\n      - targets: ['{addr}']\n"
    )
}

/// The right user and password get /metrics and /healthz (with the configured header);
/// every wrong credential, on any path, gets 401 and no metric.
fn assert_only_the_right_credentials_pass(
    get: &impl Fn(&str, Option<&str>) -> client::Answer,
    password: &str,
) {
    let good = basic("prometheus", password);
    let ok = get("/metrics", Some(&good));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("listendrop_build_info"), "{}", ok.body);
    assert!(
        ok.head.contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );
    let health = get("/healthz", Some(&good));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // /healthz follows the rules of /metrics; every wrong credential gets 401.
    for (path, authorization) in [
        ("/metrics", None),
        ("/metrics", Some(basic("prometheus", "wrong"))),
        ("/metrics", Some(basic("nobody", password))),
        ("/metrics", Some(basic("Prometheus", password))),
        ("/metrics", Some("Basic !!!".to_owned())),
        ("/metrics", Some(format!("Bearer {password}"))),
        ("/healthz", None),
        ("/healthz", Some(basic("prometheus", "wrong"))),
        ("/nothing", None),
    ] {
        let answer = get(path, authorization.as_deref());
        assert_eq!(answer.status, 401, "{path} {authorization:?}: {answer:?}");
        assert!(
            answer.head.contains("www-authenticate: basic"),
            "{}",
            answer.head
        );
        assert!(!answer.body.contains("listendrop_"), "{}", answer.body);
    }
}

/// `listendrop status` reaches the daemon with the CA and credentials from a file, and
/// says how when it cannot.
fn assert_status_reaches_it(pki: &Pki, addr: SocketAddr, password: &str) {
    let ca = pki.path("ca.crt");
    let credentials = pki.path("status-credentials");
    std::fs::write(&credentials, format!("prometheus:{password}\n")).unwrap();
    let url = format!("https://{}", addr);
    let status = |extra: &[&str]| {
        let out = tools::output(
            Command::new(binary())
                .args(["status", "--json", "--daemon-url", &url])
                .args(["--ca-file", ca.to_str().unwrap()])
                .args(extra),
        );
        assert!(out.status.success(), "{}", tools::text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            doc["daemon"].as_bool().unwrap(),
            doc["daemon_error"].clone(),
        )
    };
    let (reached, error) = status(&["--basic-auth-file", credentials.to_str().unwrap()]);
    assert!(reached && error.is_null(), "{error}");
    let (reached, error) = status(&[]);
    assert!(!reached, "no credentials");
    assert!(error.to_string().contains("401"), "{error}");
    let out = tools::output(Command::new(binary()).args(["status", "--daemon", &addr.to_string()]));
    let printed = tools::text(&out);
    assert!(
        printed.contains("--daemon-url https://HOST:PORT --ca-file"),
        "{printed}"
    );
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_others_are_refused() {
    let test = "prometheus_scrapes_over_tls_with_basic_auth_and_others_are_refused";
    if !require_root(test) {
        return;
    }
    let Some(program) = tools::require(test, "prometheus", "prometheus") else {
        return;
    };
    let pki = Pki::new();
    pki.issue_server(1);
    let password = "correct horse battery staple";
    // Relative paths: relative to the configuration file's directory.
    let config = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  prometheus: {}\n",
        bcrypt::hash(password, 10).unwrap()
    ));
    let daemon = Daemon::start(&["--web.config.file", config.to_str().unwrap()]);
    assert!(
        daemon
            .lines()
            .iter()
            .any(|l| l.contains(&format!("serving metrics on https://{}", daemon.addr))),
        "{:#?}",
        daemon.lines()
    );
    let ca = pki.path("ca.crt");
    let get = |path: &str, authorization: Option<&str>| {
        https_get(daemon.addr, &ca, None, path, authorization)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };

    assert_only_the_right_credentials_pass(&get, password);
    assert_plain_http_refused(daemon.addr);
    assert_stalled_handshake_is_cut(daemon.addr);

    assert_status_reaches_it(&pki, daemon.addr, password);

    // A real Prometheus, with the password in a file of its own.
    let dir = TempDir::new("prometheus-tls");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, password).unwrap();
    let prom = Server::start_with(
        &program,
        dir.path(),
        &https_job(
            daemon.addr,
            &format!(
                "    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: \
                 prometheus\n      password_file: {}\n",
                ca.display(),
                password_file.display()
            ),
        ),
    );
    assert_prometheus_stores_the_kernel_count(&prom);
    drop(prom);
    assert!(daemon.stop().success());
}

#[test]
fn prometheus_scrapes_with_a_client_certificate_and_clients_without_one_are_refused() {
    let test = "prometheus_scrapes_with_a_client_certificate_and_clients_without_one_are_refused";
    if !require_root(test) {
        return;
    }
    let Some(program) = tools::require(test, "prometheus", "prometheus") else {
        return;
    };
    let pki = Pki::new();
    pki.issue_server(1);
    let config = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         client_allowed_sans: [prometheus]\n  min_version: TLS12\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    ));
    let daemon = Daemon::start(&["--web.config.file", config.to_str().unwrap()]);
    let ca = pki.path("ca.crt");
    let prometheus = pki.issue_client("prometheus", false);
    let stranger = pki.issue_client("stranger", true);
    // The CA's, but not a name of client_allowed_sans.
    let intruder = pki.issue_client("intruder", false);

    let ok = https_get(daemon.addr, &ca, Some(&prometheus), "/healthz", None).unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    for (who, client) in [
        ("no certificate", None),
        ("another CA's", Some(&stranger)),
        ("not an allowed SAN", Some(&intruder)),
    ] {
        for path in ["/metrics", "/healthz"] {
            let refused = https_get(daemon.addr, &ca, client, path, None);
            assert!(refused.is_err(), "{who}: {path} answered: {refused:?}");
            println!("{who}, {path}: refused: {}", refused.unwrap_err());
        }
    }
    assert_plain_http_refused(daemon.addr);

    let dir = TempDir::new("prometheus-mtls");
    let prom = Server::start_with(
        &program,
        dir.path(),
        &https_job(
            daemon.addr,
            &format!(
                "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
                ca.display(),
                prometheus.0.display(),
                prometheus.1.display()
            ),
        ),
    );
    assert_prometheus_stores_the_kernel_count(&prom);
    drop(prom);
    assert!(daemon.stop().success());
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    if !require_root("a_rotated_certificate_is_served_without_a_restart") {
        return;
    }
    let pki = Pki::new();
    let first = pki.issue_server(1);
    let config =
        pki.web_config("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let daemon = Daemon::start(&["--web.config.file", config.to_str().unwrap()]);
    let pid = daemon.pid();
    let ca = pki.path("ca.crt");
    let served = || {
        https_get(daemon.addr, &ca, None, "/healthz", None)
            .unwrap_or_else(|e| panic!("GET /healthz: {e}"))
    };
    assert_eq!(served().server_cert, first);

    // A new key and certificate (serial 2) on disk: the next connection gets them.
    let second = pki.issue_server(2);
    assert_ne!(first, second);
    assert_eq!(served().server_cert, second, "serial 2 served");
    let reloaded = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("reloaded the web configuration"))
            .count()
    };
    // (The log is read by another thread: wait for it.)
    assert!(
        daemon.wait_for_lines(Duration::from_secs(5), |l| reloaded(l) >= 1),
        "{:#?}",
        daemon.lines()
    );

    // A broken certificate is not served: the previous one stays, the error is logged
    // once with the file and the reason.
    replace(
        &pki.path("server.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    );
    for _ in 0..3 {
        let answer = served();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.server_cert, second, "the previous certificate stays");
    }
    let keeping = |l: &str| l.contains("keeping the previous web configuration");
    assert!(daemon.wait_for_lines(Duration::from_secs(5), |lines| lines
        .iter()
        .any(|l| keeping(l))));
    std::thread::sleep(Duration::from_millis(200));
    let kept: Vec<String> = daemon.lines().into_iter().filter(|l| keeping(l)).collect();
    assert_eq!(kept.len(), 1, "logged once: {kept:#?}");
    assert!(kept[0].contains("server.crt"), "{}", kept[0]);

    // Fixed again (serial 3), and the configuration file itself changes: basic auth
    // appears without a restart.
    let third = pki.issue_server(3);
    pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  prometheus: {}\n",
        bcrypt::hash("pw", 4).unwrap()
    ));
    let answer = served();
    assert_eq!(answer.server_cert, third, "serial 3 served");
    assert_eq!(
        answer.status, 401,
        "the new configuration asks for a password"
    );
    let answer = https_get(
        daemon.addr,
        &ca,
        None,
        "/healthz",
        Some(&basic("prometheus", "pw")),
    )
    .unwrap();
    assert_eq!(answer.status, 200);

    // Switching to plain HTTP needs a restart: refused, TLS stays.
    pki.web_config("");
    assert_eq!(served().server_cert, third);
    assert!(daemon.wait_for_lines(Duration::from_secs(5), |lines| lines
        .iter()
        .any(|l| l.contains("switching between HTTPS and plain HTTP needs a restart"))));
    assert_eq!(daemon.pid(), pid, "never restarted");
    assert!(daemon.stop().success());
}

#[test]
fn a_bad_web_configuration_stops_the_daemon_with_the_file_and_the_reason() {
    let pki = Pki::new();
    pki.issue_server(1);
    let (_, client_key) = pki.issue_client("client", false);
    let missing = pki.path("missing.yml");
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  unknown_key: 1\n".to_owned(),
            "unknown_key",
        ),
        (
            "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n".to_owned(),
            "nowhere.crt",
        ),
        (
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: {}\n",
                client_key.display()
            ),
            "the key must be the one of the certificate",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n".to_owned(),
            "TLS10 is not supported",
        ),
        ("basic_auth_users:\n  prometheus: plaintext\n".to_owned(), "not a bcrypt hash"),
    ];
    let run = |path: &Path| {
        run_to_exit(Command::new(binary()).args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--no-pin",
            "--web.config.file",
            path.to_str().unwrap(),
        ]))
    };
    for (yaml, reason) in &cases {
        let path = pki.web_config(yaml);
        let failure = run(&path);
        assert_eq!(failure.code, Some(1), "{yaml}: {}", failure.stderr);
        let last = failure.stderr.lines().last().unwrap_or("");
        assert!(
            last.contains(path.to_str().unwrap()) && last.contains(reason),
            "{yaml}: wanted the file and {reason:?}: {last}"
        );
    }
    let failure = run(&missing);
    assert_eq!(failure.code, Some(1));
    assert!(
        failure.stderr.contains(missing.to_str().unwrap())
            && failure.stderr.contains("No such file"),
        "{}",
        failure.stderr
    );
}

#[test]
fn the_example_web_configuration_starts_the_daemon() {
    if !require_root("the_example_web_configuration_starts_the_daemon") {
        return;
    }
    // deploy/web-config.example.yml beside a certificate and key of the names it gives.
    let pki = Pki::new();
    pki.issue_server(1);
    let example = std::fs::read_to_string(tools::deploy("web-config.example.yml")).unwrap();
    let config = pki.web_config(&example);
    let daemon = Daemon::start(&["--web.config.file", config.to_str().unwrap()]);
    let answer = https_get(daemon.addr, &pki.path("ca.crt"), None, "/healthz", None).unwrap();
    // Its password is nobody's: locked until replaced.
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.head.contains("x-content-type-options: nosniff"));
    assert!(daemon.stop().success());
}

#[test]
fn basic_auth_and_rate_limit_without_tls() {
    if !require_root("basic_auth_and_rate_limit_without_tls") {
        return;
    }
    // exporter-toolkit allows basic auth on plain HTTP (web_config_users_noTLS).
    let pki = Pki::new();
    let config = pki.web_config(&format!(
        "basic_auth_users:\n  prometheus: {}\nrate_limit:\n  interval: 1h\n  burst: 3\n",
        bcrypt::hash("pw", 4).unwrap()
    ));
    let daemon = Daemon::start(&["--web.config.file", config.to_str().unwrap()]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let get = |authorization: Option<&str>| {
        let mut request = agent.get(&format!("http://{}/metrics", daemon.addr));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        request.call().unwrap().status().as_u16()
    };
    let good = basic("prometheus", "pw");
    // Three requests of the burst (whatever their credentials), then 429 for an hour.
    assert_eq!(get(None), 401);
    assert_eq!(get(Some(&good)), 200);
    assert_eq!(get(Some(&good)), 200);
    assert_eq!(get(Some(&good)), 429);
    assert_eq!(get(None), 429);
    assert!(daemon.stop().success());
}
