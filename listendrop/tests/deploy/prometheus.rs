//! A real Prometheus server scraping the real daemon: what it stores equals the kernel's
//! count, and it evaluates alerts.yml without errors. And `promtool check metrics` on what
//! the daemon serves.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{
    names, scenario,
    support::{daemon::Daemon, netns::Netns, require_root},
    tools::{self, TempDir},
};

/// A prometheus server on 127.0.0.1, killed by its pid on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Server {
    /// Starts `program` scraping `target` every second, with `rules` loaded, storing in
    /// `dir`.
    fn start(program: &Path, dir: &Path, target: SocketAddr, rules: &Path) -> Self {
        Self::start_with(
            program,
            dir,
            &format!(
                "rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: listendrop\n    static_configs:\n      \
                 - targets: ['{target}']\n",
                serde_json::to_string(rules.to_str().unwrap()).unwrap()
            ),
        )
    }

    /// Starts `program` with `config` (YAML: rule files, scrape configurations) after a
    /// global scrape and evaluation interval of one second, storing in `dir`.
    pub fn start_with(program: &Path, dir: &Path, config: &str) -> Self {
        let config_text =
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{config}");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text).unwrap();
        // A free port: bound and released (nothing else on this machine races for it).
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let mut server = Self { child, addr, log };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if self.get("/-/ready").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`: the body when the answer is 200.
    fn get(&self, path: &str) -> Option<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut resp = agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .ok()?;
        resp.body_mut().read_to_string().ok()
    }

    /// Waits (20 s at most) for a scrape that started after `done` (seconds since the
    /// epoch) and was stored.
    pub fn wait_for_scrape_after(&self, done: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.query("max(timestamp(listendrop_build_info))");
            if last.first().is_some_and(|(_, t)| *t > done) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape after {done}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// An instant query: the vector's samples as (labels, value).
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let body = self
            .get(&path)
            .unwrap_or_else(|| panic!("query {promql} failed:\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only our server, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn real_prometheus_stores_drops_equal_to_the_kernel_count() {
    let test = "real_prometheus_stores_drops_equal_to_the_kernel_count";
    if !require_root(test) {
        return;
    }
    let Some(program) = tools::require(test, "prometheus", "prometheus") else {
        return;
    };
    let daemon = Daemon::start(&[]);
    let dir = TempDir::new("prometheus");
    let prom = Server::start(
        &program,
        dir.path(),
        daemon.addr,
        &tools::deploy("prometheus/alerts.yml"),
    );
    let ns = Netns::new("prom");
    let overflows = scenario::ack_overflows(&ns);
    let done = now();

    prom.wait_for_scrape_after(done);
    let query = format!("sum(listendrop_drops_total{{netns=\"{}\"}})", ns.inode);
    let result = prom.query(&query);
    assert_eq!(result.len(), 1, "{query}: {result:?}");
    println!(
        "{query} = {} in Prometheus; kernel ListenOverflows delta = {overflows}",
        result[0].1
    );
    assert_eq!(
        result[0].1, overflows as f64,
        "Prometheus vs the kernel's ListenOverflows"
    );

    // The server loaded alerts.yml and evaluates every rule without error.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = prom.get("/api/v1/rules").expect("rules API");
        let v: Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert!(rules.len() >= 6, "alerts.yml not loaded: {body}");
        let bad: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(bad.is_empty(), "rules failing: {bad:#?}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules never evaluated: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(prom);
    assert!(daemon.stop().success());
}

#[test]
fn daemon_metrics_pass_promtool_check_metrics() {
    let test = "daemon_metrics_pass_promtool_check_metrics";
    if !require_root(test) {
        return;
    }
    let Some(promtool) = tools::require(test, "promtool", "prometheus") else {
        return;
    };
    // After drops of every kind this kernel shows, so per-listener series are there.
    let body = &names::exported().body;
    assert!(body.contains("listendrop_drops_total{"), "{body}");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = tools::text(&out);
    let complaints: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        complaints.is_empty(),
        "promtool check metrics complains:\n{printed}"
    );
    assert!(
        out.status.success() || !printed.trim().is_empty(),
        "promtool failed silently"
    );
}
