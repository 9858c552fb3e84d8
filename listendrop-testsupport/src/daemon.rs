//! The real listendrop binary, started as a child process and stopped by its pid.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// Path of the daemon binary: `LISTENDROP_BIN` (VM runs), else the `listendrop` that cargo
/// built next to the running test executable (`target/<profile>/deps/<test>` →
/// `target/<profile>/listendrop`).
pub fn binary() -> String {
    if let Ok(bin) = std::env::var("LISTENDROP_BIN") {
        return bin;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile.join("listendrop");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo test` of the listendrop package does: `cargo \
         test -p listendrop -p listendrop-container-tests` for the container tests), or set \
         LISTENDROP_BIN",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

pub use crate::programs::{changing_programs, counting_exactly};

/// Time a daemon has to serve after it was spawned.
const START_LIMIT_SECS: u64 = 120;

/// A running daemon and everything it printed.
pub struct Daemon {
    child: Child,
    /// Where it serves /metrics.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

/// How a daemon run ended when it was expected to fail.
pub struct Failure {
    /// Exit code.
    pub code: Option<i32>,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs the binary with `args` and expects it to exit on its own within 20 s.
pub fn run_to_exit(cmd: &mut Command) -> Failure {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listendrop");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return Failure {
                code: status.code(),
                stderr,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("listendrop did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Starts the daemon on a free loopback port and waits until it serves (all hooks are
    /// attached by then).
    pub fn start(extra: &[&str]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["--web.listen-address", "127.0.0.1:0"]);
        // Tests run daemons side by side: nothing pinned unless a test asks for its own
        // pin directory.
        if !extra.contains(&"--pin-dir") {
            cmd.arg("--no-pin");
        }
        // The VM matrix runs the suite once per hook kind.
        if let Ok(kind) = std::env::var("LISTENDROP_PROBE_KIND") {
            cmd.args(["--probe-kind", &kind]);
        }
        // Its programs are attached before it serves.
        let changing = changing_programs();
        let mut child = cmd
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn listendrop");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[listendrop] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        // Loading the programs alone takes ~11 s on an emulated arm64 guest, longer with a
        // second test's daemon starting beside it; the limit only catches a hung start.
        let deadline = Instant::now() + Duration::from_secs(START_LIMIT_SECS);
        let addr = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                // http:// or, with --web.config.file and TLS, https://.
                let rest = l.split("serving metrics on ").nth(1)?.split("://").nth(1)?;
                rest.split('/').next()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "listendrop exited ({status}) before serving:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "listendrop did not start in {START_LIMIT_SECS} s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(changing);
        let daemon = Self { child, addr, lines };
        // Namespaces made after this are born under the daemon's eyes: the first inventory
        // pass (the one that takes the namespaces already there as known at start) is done.
        assert!(
            daemon.wait_for_lines(Duration::from_secs(30), |l| l
                .iter()
                .any(|l| l.contains("listener inventory: "))),
            "listendrop's first inventory pass did not end in 30 s"
        );
        daemon
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the daemon logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the logged lines, or `timeout` passes.
    pub fn wait_for_lines(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.lines()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pred(&self.lines())
    }

    /// GETs a path and returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// The parsed `/metrics` samples.
    pub fn metrics(&self) -> Vec<prometheus_parse::Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("valid Prometheus text")
            .samples
    }

    /// Scrapes until `pred` holds (true) or `timeout` passes (false).
    pub fn wait_for_metric(
        &self,
        timeout: Duration,
        pred: impl Fn(&[prometheus_parse::Sample]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.metrics()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(self) -> std::process::ExitStatus {
        let _changing = changing_programs();
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        self.wait_for_exit()
    }

    /// [`Daemon::stop`] without waiting for exact scenarios to end: for a test that stops
    /// its daemon in the middle of its own scenario on purpose.
    pub fn stop_now(self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        self.wait_for_exit()
    }

    /// Sends `signal`, checks that the daemon logs that it detaches, and waits (10 s at
    /// most) for its exit.
    pub fn stop_with(self, signal: Signal) -> std::process::ExitStatus {
        let _changing = changing_programs();
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal");
        assert!(
            self.wait_for_lines(Duration::from_secs(10), |l| l
                .iter()
                .any(|l| l.contains("detaching and exiting"))),
            "{signal}: no \"detaching and exiting\" in 10 s"
        );
        self.wait_for_exit()
    }

    fn wait_for_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "listendrop ignored its signal for 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only this child, by pid; never by name.
        if self.child.try_wait().ok().flatten().is_none() {
            // Not while unwinding: the panicking thread may hold the lock itself (a failed
            // stop), and a test that failed need not count exactly any more.
            let _changing = (!std::thread::panicking()).then(changing_programs);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of a sample.
pub fn value(sample: &prometheus_parse::Sample) -> f64 {
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("unexpected sample type for {}", sample.metric),
    }
}

/// Sum of `metric` over the samples whose labels include all of `labels`.
pub fn sum(samples: &[prometheus_parse::Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

/// `listendrop status --json --netns INODE` with `options` (e.g. `--no-daemon`, or
/// `--daemon ADDR`): the whole document and the entry of the listener on `port`, which it
/// must list.
pub fn status_json(
    netns: &str,
    port: u16,
    options: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let out = Command::new(binary())
        .args(["status", "--json", "--netns", netns])
        .args(options)
        .output()
        .expect("run listendrop status");
    assert!(
        out.status.success(),
        "listendrop status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let entry = doc["listeners"]
        .as_array()
        .expect("a listeners array")
        .iter()
        .find(|l| l["listen_port"] == port)
        .cloned()
        .unwrap_or_else(|| panic!("status lists no listener on port {port}: {doc:#}"));
    (doc, entry)
}
