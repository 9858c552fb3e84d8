//! Real container runtimes for the tests, with images built locally (no registry): a
//! `FROM scratch` image holding the static busybox of Debian's `busybox-static`, run by
//! podman (its own storage, its Docker-compatible API on a socket of its own), by
//! containerd (its own configuration, state and socket; Kubernetes pods through its CRI
//! plugin, as a kubelet makes them), and cgroups made by the test in every layout the
//! runtimes make. Everything is removed on drop: containers, pods, images, daemons (by
//! pid), bridges, mounts and cgroups.
//!
//! The machines run cgroups v1 with cgroup2 beside them (hybrid) and no systemd: runc,
//! the cgroupfs driver, and explicit ulimits (no CAP_SYS_RESOURCE). The QEMU kernel matrix
//! has no runtime at all and does not run the container tests.

pub mod cgroups;
#[cfg(feature = "cri")]
pub mod containerd;
pub mod podman;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// The programs the container tests drive, with their Debian packages (installed by
/// `cargo xtask test`, xtask/src/toolchain.rs).
pub const PROGRAMS: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("runc", "runc"),
    ("conmon", "conmon"),
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("busybox", "busybox-static"),
];

/// `true` when the test can run real containers here. A missing program skips with the
/// package to install, or fails under `LISTENDROP_REQUIRE_PRIVILEGED`: the project installs
/// them (`cargo xtask test`). (The kernel matrix's guests, which have no runtime, do not
/// run these tests: they run the privileged ones only.)
pub fn available(test: &str, programs: &[&str]) -> bool {
    if !crate::require_root(test) {
        return false;
    }
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(p, _)| programs.contains(p) && which(p).is_none())
        .map(|(p, pkg)| format!("{p} (Debian {pkg})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: skipped: not installed: {}; `cargo xtask test` installs them \
         (xtask/src/toolchain.rs)",
        missing.join(", ")
    );
    if std::env::var_os("LISTENDROP_REQUIRE_PRIVILEGED").is_some() {
        panic!("{why}; LISTENDROP_REQUIRE_PRIVILEGED is set, so skipping is an error");
    }
    println!("{why}");
    false
}

/// The full path of `program` on PATH (sbin included: runc lives there).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call (`ldt-TAG-PID-N`).
pub fn unique(tag: &str) -> String {
    format!(
        "ldt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, Kubernetes-shaped UID (random enough for a test: the clock, the pid and a
/// counter, mixed by splitmix64).
pub fn uid() -> String {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
    let a = mix(nanos ^ (u64::from(std::process::id()) << 32) ^ n);
    let b = mix(a ^ n.rotate_left(17));
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A scratch directory (mode 0755) removed on drop, after unmounting whatever a runtime
/// left mounted under it.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Makes it under /tmp.
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(&point).status();
    }
}

/// A directory holding a `Containerfile` for an image of busybox alone, whose default
/// command is `CMD` (`/bin/busybox` and its arguments).
pub fn busybox_context(dir: &Path, cmd: &[&str]) -> PathBuf {
    let context = dir.join("context");
    std::fs::create_dir_all(&context).unwrap();
    let busybox = which("busybox").expect("busybox (Debian busybox-static)");
    std::fs::copy(&busybox, context.join("busybox")).unwrap();
    let cmd = serde_json::to_string(cmd).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD {cmd}\n"
        ),
    )
    .unwrap();
    context
}

/// The port busybox httpd serves in the test images, and its listen() backlog.
pub const HTTPD_PORT: u16 = 8080;

/// The pid of the process of container `id`: the first whose cgroup path names it.
pub fn pid_of_container(id: &str, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                cgroup.is_ok_and(|c| c.contains(id)) && comm.is_ok_and(|c| c.trim() != "conmon")
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no process of container {id} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
