//! Container and pod identity of listeners owned by real containers: podman containers
//! named through its Docker-compatible API, Kubernetes pods made through containerd's CRI
//! plugin named from their OCI bundles, and processes in cgroups the test made in every
//! layout the runtimes make. Each listener drops handshakes inside its own network
//! namespace (its server stopped, raw ACKs into its full accept queue); each test checks
//! the info series, the drop log line, `status`, and that the drops still equal the
//! namespace's kernel counters.
//!
//! They need root and the runtimes, which `cargo xtask test` installs; they fail rather
//! than skip under `LISTENDROP_REQUIRE_PRIVILEGED`, as the privileged tests do. They run
//! the daemon cargo builds for the `listendrop` package's tests: build both in one
//! command (`cargo test --workspace`, or `cargo test -p listendrop -p
//! listendrop-container-tests`), or name another daemon with `LISTENDROP_BIN`. A package of their own: the
//! Kubernetes CRI client they need (gRPC: tonic, k8s-cri, protoc at build time) stays out
//! of the privileged tests' build, which the kernel matrix's guests run and which then
//! reuses the release build of the .deb (xtask/src/vm/binaries.rs). The guests have no
//! container runtime anyway.

use listendrop_testsupport as support;

mod cgroups;
mod cri;
mod podman;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::support::{
    daemon::{binary, status_json, sum, Daemon},
    expect,
    netns::Netns,
    scenarios::{self, StoppedOverflow},
};

/// What a listener's `listendrop_listener_info` must say of its owner's container ("":
/// empty).
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub runtime: &'static str,
    pub id: String,
    pub name: String,
    pub image: String,
    pub pod: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub qos: &'static str,
}

impl Expected {
    /// (label, value) pairs of the info series.
    fn labels(&self) -> [(&'static str, &str); 8] {
        [
            ("container_runtime", self.runtime),
            ("container_id", &self.id),
            ("container", &self.name),
            ("image", &self.image),
            ("pod", &self.pod),
            ("pod_namespace", &self.pod_namespace),
            ("pod_uid", &self.pod_uid),
            ("pod_qos", self.qos),
        ]
    }
}

/// Waits (30 s at most) until the info series of the listener on `port` in `ns` carries
/// `want`; panics with what it carried instead.
pub fn wait_for_info(daemon: &Daemon, ns: &Netns, port: u16, want: &Expected) {
    let netns = ns.inode.to_string();
    let port = port.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no series");
    loop {
        let metrics = daemon.metrics();
        let series: Vec<_> = metrics
            .iter()
            .filter(|s| s.metric == "listendrop_listener_info")
            .filter(|s| s.labels.get("netns") == Some(netns.as_str()))
            .filter(|s| s.labels.get("listen_port") == Some(port.as_str()))
            .collect();
        if let [one] = series.as_slice() {
            let fits = want
                .labels()
                .iter()
                .all(|(k, v)| one.labels.get(k).unwrap_or("") == *v);
            if fits {
                return;
            }
            last = format!("{:?}", one.labels);
        } else if series.len() > 1 {
            panic!("more than one info series for one listener: {series:#?}");
        }
        assert!(
            Instant::now() < deadline,
            "netns {netns} port {port}: want {want:#?}\nthe info series says {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The fields a drop line of a listener in `want`'s container carries.
pub fn log_fields(want: &Expected) -> Vec<String> {
    let mut fields = Vec::new();
    if want.id.is_empty() {
        return fields;
    }
    if !want.pod.is_empty() {
        fields.push(format!(" pod={}/{} ", want.pod_namespace, want.pod));
    } else if !want.pod_uid.is_empty() {
        fields.push(format!(" pod_uid={} ", want.pod_uid));
    }
    if !want.name.is_empty() {
        fields.push(format!(" container={} ", want.name));
    }
    fields.push(format!(
        " container_id={} ",
        &want.id[..want.id.len().min(12)]
    ));
    if !want.image.is_empty() {
        fields.push(format!(" image={} ", want.image));
    }
    fields
}

/// The `ack_accept_queue_full` lines of the listener on `port` in `ns`.
fn drop_lines(daemon: &Daemon, ns: &Netns, port: u16) -> Vec<String> {
    let suffix = format!(":{port}");
    expect::lines(daemon, ns, "ack_accept_queue_full")
        .into_iter()
        .filter(|l| expect::field(l, "listener").ends_with(&suffix))
        .collect()
}

/// Stops `pid` and makes `acks` ACK-time overflows of its listener on `port`, from
/// [`scenarios::unanswering_neighbour`]`(ns, subnet)`.
pub fn stop_and_overflow(
    ns: &Netns,
    pid: i32,
    port: u16,
    subnet: u8,
    acks: u32,
) -> StoppedOverflow {
    scenarios::stop_and_overflow(ns, pid, port, subnet, acks, Duration::from_millis(20))
}

/// After [`stop_and_overflow`]: the listener's drops equal the kernel's count, each drop
/// line names the container, and every drop of the namespace is accounted for.
pub fn check_drops(daemon: &Daemon, ns: &Netns, port: u16, overflows: u64, want: &Expected) {
    let reason = "ack_accept_queue_full";
    let port_label = port.to_string();
    let metrics = daemon.metrics();
    if expect::counted(
        &metrics,
        ns,
        "listendrop_drops_total",
        reason,
        &[("listen_port", &port_label)],
        overflows,
        "ListenOverflows",
    ) {
        let enough = |_: &[String]| drop_lines(daemon, ns, port).len() as u64 >= overflows;
        assert!(
            daemon.wait_for_lines(Duration::from_secs(10), enough),
            "port {port}: {} drop lines for {overflows} drops",
            drop_lines(daemon, ns, port).len()
        );
        for line in drop_lines(daemon, ns, port) {
            for field in log_fields(want) {
                // The field is followed by another (client=...) in every line.
                assert!(line.contains(&field), "{field:?} missing from {line}");
            }
            if want.id.is_empty() {
                assert!(!line.contains(" container_id="), "a host process: {line}");
            }
        }
    }
    let drops = ns.nstat()["TcpExtListenDrops"];
    expect::reconciled(daemon, ns, drops);
    // Still exactly one info series for the listener.
    let listener = [
        ("netns", ns.inode.to_string()),
        ("listen_port", port_label.clone()),
    ];
    let labels: Vec<(&str, &str)> = listener.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        sum(&daemon.metrics(), "listendrop_listener_info", &labels),
        1.0
    );
}

/// `listendrop status --json --no-daemon` for `ns` (with `extra` options): the entry of
/// the listener on `port` must show `want`'s container.
pub fn check_status(ns: &Netns, port: u16, want: &Expected, extra: &[&str]) {
    let mut options = vec!["--no-daemon"];
    options.extend_from_slice(extra);
    let (_, entry) = status_json(&ns.inode.to_string(), port, &options);
    let c = &entry["container"];
    if want.id.is_empty() {
        assert!(c.is_null(), "a host process: {entry:#}");
        return;
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    assert_eq!(text(&c["id"]), want.id, "{entry:#}");
    assert_eq!(text(&c["runtime"]), want.runtime, "{entry:#}");
    assert_eq!(text(&c["name"]), want.name, "{entry:#}");
    assert_eq!(text(&c["image"]), want.image, "{entry:#}");
    assert_eq!(text(&c["pod"]["name"]), want.pod, "{entry:#}");
    assert_eq!(
        text(&c["pod"]["namespace"]),
        want.pod_namespace,
        "{entry:#}"
    );
    assert_eq!(text(&c["pod"]["uid"]), want.pod_uid, "{entry:#}");
    assert_eq!(text(&c["pod"]["qos"]), want.qos, "{entry:#}");
    // The table shows it too.
    let table = Command::new(binary())
        .args(["status", "--no-daemon", "--netns", &ns.inode.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let shown = if !want.pod.is_empty() {
        format!("{}/{}/", want.pod_namespace, want.pod)
    } else if !want.name.is_empty() {
        want.name.clone()
    } else {
        want.id[..12].to_owned()
    };
    let shown: String = shown.chars().take(31).collect();
    assert!(
        table
            .lines()
            .any(|l| l.contains(&format!(":{port} ")) && l.contains(&shown)),
        "{shown} not in the status table:\n{table}"
    );
}

/// Counts the log lines that contain `needle`.
pub fn count_lines(daemon: &Daemon, needle: &str) -> usize {
    daemon.lines().iter().filter(|l| l.contains(needle)).count()
}

/// `listendrop trace --json` of one namespace, running (stopped by its pid).
pub struct Trace {
    child: Child,
    stdout: Option<JoinHandle<Vec<String>>>,
}

impl Trace {
    /// Starts it for `ns` with `extra` options, and waits until it attached and its
    /// inventory named the owners (its first pass).
    pub fn start(ns: &Netns, extra: &[&str]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["trace", "--json", "--netns", &ns.inode.to_string()])
            .args(extra);
        if let Ok(kind) = std::env::var("LISTENDROP_PROBE_KIND") {
            cmd.args(["--probe-kind", &kind]);
        }
        // Its programs are attached once it waits for drops.
        let changing = crate::support::daemon::changing_programs();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = stderr
            .by_ref()
            .map_while(Result::ok)
            .inspect(|l| eprintln!("[trace] {l}"))
            .any(|l| l.contains("waiting for drops"));
        drop(changing);
        assert!(ready, "trace did not start");
        // Keep reading: with its stderr closed, trace's next log line would fail.
        std::thread::spawn(move || {
            for line in stderr.map_while(Result::ok) {
                eprintln!("[trace] {line}");
            }
        });
        // Its inventory's first pass (run at start, every 2 s after).
        std::thread::sleep(Duration::from_millis(2500));
        Self {
            child,
            stdout: Some(stdout),
        }
    }

    /// Stops it (SIGTERM) and returns the objects it printed.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(500));
        let changing = crate::support::daemon::changing_programs();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        drop(changing);
        assert!(status.success());
        let lines = self.stdout.take().unwrap().join().unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Each drop `trace --json` printed for the listener on `port` names `want`'s container.
pub fn check_trace(objects: &[serde_json::Value], port: u16, overflows: u64, want: &Expected) {
    let drops: Vec<_> = objects
        .iter()
        .filter(|o| o["reason"] == "ack_accept_queue_full" && o["listen_port"] == port)
        .collect();
    assert_eq!(
        drops.len() as u64,
        overflows,
        "one object per drop: {objects:#?}"
    );
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    for o in drops {
        let c = &o["container"];
        assert_eq!(text(&c["id"]), want.id, "{o}");
        assert_eq!(text(&c["runtime"]), want.runtime, "{o}");
        assert_eq!(text(&c["name"]), want.name, "{o}");
        assert_eq!(text(&c["image"]), want.image, "{o}");
        assert_eq!(text(&c["pod"]["name"]), want.pod, "{o}");
        assert_eq!(text(&c["pod"]["namespace"]), want.pod_namespace, "{o}");
        assert_eq!(text(&c["pod"]["uid"]), want.pod_uid, "{o}");
        assert_eq!(text(&c["pod"]["qos"]), want.qos, "{o}");
    }
}
