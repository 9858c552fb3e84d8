//! `deploy/systemd/listendrop.service`: systemd's own checks, and its capability set
//! proven sufficient and minimal on this machine by running the real daemon under it.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    launch::{self, Outcome},
    scenario,
    support::{
        daemon::{sum, Daemon},
        netns::Netns,
        require_root,
        sockets::listen,
    },
    tools::{self, TempDir},
};

fn unit_path() -> std::path::PathBuf {
    tools::deploy("systemd/listendrop.service")
}

/// The value of every `key=` line of the unit (in order).
fn unit_values(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// The unit's capabilities (AmbientCapabilities=, which must equal
/// CapabilityBoundingSet=).
pub fn unit_capabilities() -> Vec<String> {
    let words = |key| -> Vec<String> {
        let values = unit_values(key);
        assert_eq!(values.len(), 1, "one {key}= line");
        values[0].split_whitespace().map(str::to_owned).collect()
    };
    let ambient = words("AmbientCapabilities");
    let bounding = words("CapabilityBoundingSet");
    assert_eq!(
        ambient.iter().collect::<BTreeSet<_>>(),
        bounding.iter().collect::<BTreeSet<_>>(),
        "AmbientCapabilities= and CapabilityBoundingSet= differ"
    );
    ambient
}

/// A root directory for `systemd-analyze verify --root`: the unit in etc/systemd/system,
/// the daemon at its ExecStart= path, and the distribution's units (targets the service
/// depends on by default).
fn verify_root(unit_text: &str) -> TempDir {
    let root = TempDir::new("verify");
    let unit = root.path().join("etc/systemd/system/listendrop.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, unit_text).unwrap();
    // Every Exec*= program must exist in the root: the daemon is the one built, the
    // others (install) are the host's.
    for line in unit_text.lines().filter(|l| l.starts_with("Exec")) {
        let value = line.split_once('=').unwrap().1;
        let program = value
            .trim_start_matches(['+', '-', '@', '!', ':'])
            .split_whitespace()
            .next()
            .unwrap();
        let from = if program == "/usr/local/bin/listendrop" {
            std::path::PathBuf::from(crate::support::daemon::binary())
        } else {
            std::path::PathBuf::from(program)
        };
        tools::copy(&from, &root.path().join(program.trim_start_matches('/')));
    }
    let units = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    // cp -a: the distribution's units are full of relative symlinks.
    let out = tools::output(
        Command::new("cp")
            .arg("-a")
            .arg("/usr/lib/systemd/system")
            .arg(&units),
    );
    assert!(out.status.success(), "{}", tools::text(&out));
    // The unit's user, made by its sysusers.d file with the real tool.
    let sysusers = root.path().join("usr/lib/sysusers.d/listendrop.conf");
    tools::copy(&tools::deploy("systemd/listendrop.sysusers"), &sysusers);
    let out = tools::output(
        Command::new("systemd-sysusers").arg(format!("--root={}", root.path().display())),
    );
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        tools::text(&out)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("listendrop:x:"), "{passwd}");
    root
}

/// `systemd-analyze verify --root=ROOT listendrop.service`: (success, everything printed).
fn verify(analyze: &Path, unit_text: &str) -> (bool, String) {
    run_verify(analyze, &verify_root(unit_text))
}

/// The same, with the ExecStart= binary removed from the root.
fn verify_without_binary(analyze: &Path, unit_text: &str) -> (bool, String) {
    let root = verify_root(unit_text);
    std::fs::remove_file(root.path().join("usr/local/bin/listendrop")).unwrap();
    run_verify(analyze, &root)
}

fn run_verify(analyze: &Path, root: &TempDir) -> (bool, String) {
    let out = tools::output(
        Command::new(analyze)
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg("listendrop.service"),
    );
    (out.status.success(), tools::text(&out))
}

#[test]
fn systemd_unit_verifies_clean() {
    let test = "systemd_unit_verifies_clean";
    let Some(analyze) = tools::require(test, "systemd-analyze", "systemd") else {
        return;
    };
    if tools::require(test, "systemd-sysusers", "systemd").is_none() {
        return;
    }
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let (ok, printed) = verify(&analyze, &text);
    assert!(
        ok && printed.trim().is_empty(),
        "systemd-analyze verify:\n{printed}"
    );

    // The commented web configuration line, uncommented, verifies too.
    let secured = text.replace(
        "#Environment=LISTENDROP_WEB_CONFIG_FILE=",
        "Environment=LISTENDROP_WEB_CONFIG_FILE=",
    );
    assert_ne!(secured, text, "the unit shows --web.config.file");
    let (ok, printed) = verify(&analyze, &secured);
    assert!(
        ok && printed.trim().is_empty(),
        "with the web configuration: {printed}"
    );

    // The check can fail: a misspelled directive and a missing binary are reported.
    let (_, printed) = verify(&analyze, &text.replace("ProtectHome=", "ProtectHom="));
    assert!(
        printed.contains("ProtectHom"),
        "typo not reported:\n{printed}"
    );
    let (ok, printed) = verify_without_binary(&analyze, &text);
    assert!(
        !ok && printed.contains("/usr/local/bin/listendrop"),
        "missing binary not reported:\n{printed}"
    );
}

#[test]
fn systemd_unit_security_exposure_is_low() {
    let test = "systemd_unit_security_exposure_is_low";
    let Some(analyze) = tools::require(test, "systemd-analyze", "systemd") else {
        return;
    };
    let out = tools::output(
        Command::new(analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit_path()),
    );
    let printed = tools::text(&out);
    assert!(out.status.success(), "{printed}");
    let score: f64 = printed
        .lines()
        .find_map(|l| {
            let rest = l
                .split("Overall exposure level for listendrop.service: ")
                .nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{printed}"));
    println!("systemd-analyze security --offline=true: exposure {score} (at most 3.0 allowed)");
    assert!(score <= 3.0, "exposure {score} > 3.0:\n{printed}");
}

#[test]
fn systemd_unit_has_the_required_hardening() {
    let one = |key: &str| -> String {
        let values = unit_values(key);
        assert_eq!(values.len(), 1, "{key}= must appear once: {values:?}");
        values[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStart"), "/usr/local/bin/listendrop");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("User"), "listendrop", "not a root service");
    assert_eq!(one("Group"), "listendrop");
    // What launch.rs reproduces for the pins.
    assert_eq!(
        one("ExecStartPre"),
        "+/usr/bin/install -d -o listendrop -g listendrop -m 0700 /sys/fs/bpf/listendrop"
    );
    assert_eq!(one("ReadWritePaths"), "/sys/fs/bpf/listendrop");
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("LimitMEMLOCK", "infinity"),
        // What launch.rs reproduces around the daemon in the capability tests.
        ("ProtectProc", "invisible"),
        ("ReadOnlyPaths", "/sys /proc/sys"),
    ] {
        assert_eq!(one(key), want, "{key}=");
    }
    let caps: BTreeSet<_> = unit_capabilities().into_iter().collect();
    for forbidden in [
        "CAP_NET_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
    ] {
        assert!(!caps.contains(forbidden), "{forbidden} is not needed");
    }
    if caps.contains("CAP_SYS_ADMIN") {
        // bpf_capable() and perfmon_capable() accept CAP_SYS_ADMIN.
        for redundant in ["CAP_BPF", "CAP_PERFMON"] {
            assert!(
                !caps.contains(redundant),
                "{redundant} adds nothing to CAP_SYS_ADMIN"
            );
        }
    }
    // listendrop reads no kernel symbol: neither CAP_SYSLOG nor the kernel log.
    assert!(!caps.contains("CAP_SYSLOG"), "CAP_SYSLOG is not needed");
    assert_eq!(one("ProtectKernelLogs"), "yes");
}

/// Whether /sys/kernel/tracing is searchable and readable by any user.
fn tracefs_open_to_others() -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata("/sys/kernel/tracing").is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// Inventory passes every second, so that a few seconds show whether it works.
const FAST_INVENTORY: [&str; 2] = ["--inventory-interval-secs", "1"];

/// A namespace of the test's own with a listener (backlog 7) that a root process (this
/// test) holds: the inventory must find it, enter its namespace and name its owner.
fn listener_fixture() -> (Netns, socket2::Socket) {
    let ns = Netns::new("inv");
    let socket = ns.enter(|| listen("127.0.0.1:0".parse().unwrap(), 7, None));
    (ns, socket)
}

/// What root's daemon shows: its hooks, and every series of the fixture's namespace once
/// the inventory has made a few passes over it.
fn root_reference(ns: &Netns) -> (BTreeSet<String>, BTreeSet<String>) {
    let daemon = Daemon::start(&FAST_INVENTORY);
    let hooks = launch::attached(&daemon.metrics());
    assert!(!hooks.is_empty(), "root attached nothing on this kernel");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !launch::series_of(&daemon.metrics(), ns.inode)
        .iter()
        .any(|s| s.starts_with("listendrop_listener_info{"))
    {
        assert!(
            Instant::now() < deadline,
            "root's inventory never showed the fixture"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more passes, for anything that needs a previous one (rates).
    std::thread::sleep(Duration::from_millis(2500));
    let series = launch::series_of(&daemon.metrics(), ns.inode);
    assert!(daemon.stop().success());
    (hooks, series)
}

/// Waits (`timeout` at most) until `daemon` shows at least `want` for the fixture's
/// namespace; returns what is still missing.
fn inventory_missing(
    daemon: &launch::Restricted,
    ns: &Netns,
    want: &BTreeSet<String>,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = launch::series_of(&daemon.metrics(), ns.inode);
        let missing: Vec<String> = want.difference(&got).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What both capability tests start from: the unit's capabilities, a binary uid nobody
/// can run, a namespace with a listener, and what a root daemon attaches and reports there.
struct CapsFixture {
    caps: Vec<String>,
    bin: std::path::PathBuf,
    _copy: Option<crate::tools::TempDir>,
    ns: Netns,
    _listener: socket2::Socket,
    hooks: BTreeSet<String>,
    series: BTreeSet<String>,
}

impl CapsFixture {
    /// `None` (the test is skipped, or fails under `cargo xtask test`) without root or
    /// setpriv/unshare.
    fn new(test: &str) -> Option<Self> {
        if !require_root(test) || !launch::tools_present(test) {
            return None;
        }
        let caps = unit_capabilities();
        let (bin, copy) = launch::binary_for_nobody();
        let (ns, listener) = listener_fixture();
        let (hooks, series) = root_reference(&ns);
        Some(Self {
            caps,
            bin,
            _copy: copy,
            ns,
            _listener: listener,
            hooks,
            series,
        })
    }
}

#[test]
fn unit_capabilities_let_a_non_root_daemon_do_everything_root_does() {
    let Some(f) =
        CapsFixture::new("unit_capabilities_let_a_non_root_daemon_do_everything_root_does")
    else {
        return;
    };
    let CapsFixture {
        caps,
        bin,
        ns,
        hooks,
        series,
        _copy,
        _listener,
    } = f;

    let daemon = match launch::start(&bin, &caps, &FAST_INVENTORY) {
        Outcome::Serving(d) => d,
        Outcome::Exited(log) => panic!("with {caps:?} as uid {}: exited:\n{log}", launch::NOBODY),
    };
    assert!(!hooks.is_empty(), "root attaches nothing here");
    assert_eq!(
        launch::attached(&daemon.metrics()),
        hooks,
        "uid {} with {caps:?} attaches what root attaches",
        launch::NOBODY
    );
    let missing = inventory_missing(&daemon, &ns, &series, Duration::from_secs(10));
    assert!(
        missing.is_empty(),
        "uid {} with {caps:?}: the inventory lacks {missing:#?}\n{}",
        launch::NOBODY,
        daemon.log()
    );
    // And it counts: drops in a namespace of our own equal the kernel's.
    let drops = Netns::new("caps");
    let overflows = scenario::ack_overflows(&drops);
    let netns = drops.inode.to_string();
    let counted = sum(
        &daemon.metrics(),
        "listendrop_drops_total",
        &[("netns", &netns)],
    );
    assert_eq!(
        counted, overflows as f64,
        "drops counted vs ListenOverflows"
    );
    println!(
        "uid {} with {caps:?}: hooks {hooks:?}, {} inventory series, {overflows} drops counted",
        launch::NOBODY,
        series.len()
    );
}

#[test]
fn each_unit_capability_is_needed() {
    let Some(f) = CapsFixture::new("each_unit_capability_is_needed") else {
        return;
    };
    let CapsFixture {
        caps,
        bin,
        ns,
        hooks,
        series,
        _copy,
        _listener,
    } = f;
    let mut unexplained = Vec::new();
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        let why = match launch::start(&bin, &fewer, &FAST_INVENTORY) {
            Outcome::Exited(log) => Some(format!(
                "the daemon refuses to start: {}",
                log.lines().last().unwrap_or("")
            )),
            Outcome::Serving(d) => {
                let got = launch::attached(&d.metrics());
                if got != hooks {
                    let lost: Vec<_> = hooks.difference(&got).collect();
                    Some(format!("hooks not attached: {lost:?}"))
                } else {
                    let missing = inventory_missing(&d, &ns, &series, Duration::from_secs(4));
                    (!missing.is_empty()).then(|| {
                        format!(
                            "the inventory lacks {} of {} series of a namespace, e.g. {}",
                            missing.len(),
                            series.len(),
                            missing[0]
                        )
                    })
                }
            }
        };
        match why {
            Some(why) => println!("without {cap}: {why}"),
            // A tracefs readable by others needs no DAC override for the hooks (the
            // inventory still needs it for other users' /proc/PID).
            None if cap == "CAP_DAC_READ_SEARCH" && tracefs_open_to_others() => println!(
                "without {cap}: no difference here (this host's tracefs is readable by \
                 others; it is mode 0700 by default)"
            ),
            None => unexplained.push(cap.clone()),
        }
    }
    assert!(
        unexplained.is_empty(),
        "the daemon works the same without {unexplained:?}: remove them from the unit"
    );
}
