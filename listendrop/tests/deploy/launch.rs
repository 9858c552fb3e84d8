//! The real daemon started the way the systemd unit starts it: an unprivileged uid, no new
//! privileges, and only the given capabilities (inheritable, ambient and bounding sets),
//! through util-linux `setpriv`; in a mount namespace of its own that reproduces the
//! unit's `ProtectProc=invisible` and `ReadOnlyPaths=/sys /proc/sys` (util-linux
//! `unshare`; systemd itself cannot run here).

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    support::daemon::{binary, changing_programs, value},
    tools::{self, TempDir},
};

/// The uid and gid of `nobody`, standing in for systemd's DynamicUser.
pub const NOBODY: &str = "65534";

/// `CAP_BPF` → `bpf`, as setpriv spells capabilities.
fn setpriv_name(cap: &str) -> String {
    cap.trim_start_matches("CAP_").to_lowercase()
}

/// Run as root in a private mount namespace (mounts never propagate back to the host),
/// then `exec setpriv "$@"`. It reproduces what the unit sets up around the daemon:
/// - a bpffs of its own at /sys/fs/bpf, mode 0700 as systemd mounts it at boot (private:
///   it and the pins in it vanish with the namespace), and the pin directory made for
///   the service's user (`ExecStartPre=+/usr/bin/install -d -o listendrop ...`);
/// - a /proc of its own with hidepid=invisible (`ProtectProc=invisible`);
/// - /sys (every mount below it, tracefs included) and /proc/sys read-only
///   (`ReadOnlyPaths=/sys /proc/sys`, recursive as in systemd), except the pin directory
///   (`ReadWritePaths=/sys/fs/bpf/listendrop`).
const UNIT_MOUNTS: &str = r#"set -e
mount -t bpf -o mode=700 bpf /sys/fs/bpf
install -d -o 65534 -g 65534 -m 0700 /sys/fs/bpf/listendrop
mount -t proc -o hidepid=invisible proc /proc
mount --rbind /sys /sys
awk '$5 ~ "^/sys(/|$)" {print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
    mount -o remount,bind,ro "$m"
done
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /sys/fs/bpf/listendrop /sys/fs/bpf/listendrop
mount -o remount,bind,rw /sys/fs/bpf/listendrop
exec setpriv "$@""#;

/// A command that runs `program` as uid/gid 65534 with exactly `caps`, under the unit's
/// filesystem restrictions (see [`UNIT_MOUNTS`]). The pid is the program's: every step
/// execs the next.
pub fn restricted(caps: &[String], program: &str) -> Command {
    let list: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", setpriv_name(c))))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "slave",
        "sh",
        "-c",
        UNIT_MOUNTS,
        "sh",
    ]);
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--no-new-privs",
        &format!("--inh-caps={list}"),
        &format!("--ambient-caps={list}"),
        &format!("--bounding-set={list}"),
        program,
    ]);
    cmd
}

/// Whether setpriv and unshare are installed; otherwise skips (or fails).
pub fn tools_present(test: &str) -> bool {
    ["setpriv", "unshare", "awk"]
        .iter()
        .all(|t| tools::require(test, t, "util-linux, mawk").is_some())
}

/// The daemon binary at a path uid 65534 may execute: the built one when every directory
/// above it is searchable by others, else a copy (kept alive by the returned guard).
pub fn binary_for_nobody() -> (PathBuf, Option<TempDir>) {
    let built = PathBuf::from(binary());
    let ok = tools::output(restricted(&[], built.to_str().unwrap()).arg("--version"))
        .status
        .success();
    if ok {
        return (built, None);
    }
    let dir = TempDir::new("bin");
    let copy = dir.path().join("listendrop");
    tools::copy(&built, &copy);
    (copy, Some(dir))
}

/// How a restricted start ended.
pub enum Outcome {
    /// It serves.
    Serving(Restricted),
    /// It exited before serving, with this log.
    Exited(String),
}

/// A daemon running under setpriv, stopped (by its pid) on drop.
pub struct Restricted {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

/// Starts `bin` under `caps` on a free loopback port, with `extra` arguments, and waits
/// until it serves or exits.
pub fn start(bin: &std::path::Path, caps: &[String], extra: &[&str]) -> Outcome {
    // Its programs are attached before it serves.
    let _changing = changing_programs();
    let mut child = restricted(caps, bin.to_str().unwrap())
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn setpriv listendrop");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let stderr = child.stderr.take().unwrap();
    let tag = caps.join("+");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[listendrop {tag}] {line}");
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            // http:// or, with --web.config.file and TLS, https://.
            let rest = l.split("serving metrics on ").nth(1)?.split("://").nth(1)?;
            rest.split('/').next()?.parse::<SocketAddr>().ok()
        });
        if let Some(addr) = found {
            return Outcome::Serving(Restricted { child, addr, lines });
        }
        if child.try_wait().unwrap().is_some() {
            // Let the reader thread take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return Outcome::Exited(lines.lock().unwrap().join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "listendrop did not start in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Restricted {
    /// Every line it logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The parsed /metrics samples.
    pub fn metrics(&self) -> Vec<prometheus_parse::Sample> {
        let body = get(self.addr, "/metrics");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("valid Prometheus text")
            .samples
    }
}

impl Drop for Restricted {
    fn drop(&mut self) {
        // Only this child (setpriv execs the daemon: same pid), by pid.
        let _changing = changing_programs();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `addr`; panics unless the answer is 200.
pub fn get(addr: SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .expect("body")
}

/// Every series (metric name and labels, without the value) of network namespace
/// `netns`, pids left out (they name the test process either way).
pub fn series_of(samples: &[prometheus_parse::Sample], netns: u64) -> BTreeSet<String> {
    let netns = netns.to_string();
    samples
        .iter()
        .filter(|s| s.labels.get("netns") == Some(netns.as_str()))
        .map(|s| {
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "pid")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            format!("{}{{{}}}", s.metric, labels.join(","))
        })
        .collect()
}

/// The hooks attached (`listendrop_probe_attached == 1`), as `probe/kind`.
pub fn attached(samples: &[prometheus_parse::Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.metric == "listendrop_probe_attached" && value(s) == 1.0)
        .map(|s| {
            format!(
                "{}/{}",
                s.labels.get("probe").unwrap_or("?"),
                s.labels.get("kind").unwrap_or("?")
            )
        })
        .collect()
}
