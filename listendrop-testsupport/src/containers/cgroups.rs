//! Cgroups made by the test at the paths the runtimes make (`/kubepods/...`,
//! `/system.slice/docker-<id>.scope`, ...), in the unified hierarchy (cgroup2; a hybrid
//! host's `/sys/fs/cgroup/unified`) and/or a v1 one, and processes started inside them.
//! The directories the test made are removed on drop, deepest first; parents another
//! test (or a runtime) still uses stay.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Which hierarchies a test cgroup is made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup2 only (what `0::PATH` shows).
    Unified,
    /// The v1 `pids` hierarchy only (what `N:pids:PATH` shows; `0::` stays the test's).
    V1Pids,
}

/// Where cgroup2 is mounted: `/sys/fs/cgroup` on a v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one (read from /proc/self/mountinfo).
pub fn unified_mount() -> Option<PathBuf> {
    mount_of(|fstype, _| fstype == "cgroup2")
}

/// Where the v1 hierarchy of `controller` is mounted.
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    mount_of(|fstype, options| fstype == "cgroup" && options.split(',').any(|o| o == controller))
}

/// The mount point of the first mount whose (fstype, super options) `pred` accepts.
fn mount_of(pred: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let options = r.nth(1)?;
        pred(fstype, options).then(|| PathBuf::from(point))
    })
}

/// A cgroup the test made (with the parents that did not exist).
pub struct TestCgroup {
    /// Its path as `/proc/PID/cgroup` shows it.
    pub path: String,
    /// Its directory.
    pub dir: PathBuf,
    mount: PathBuf,
}

/// Serialises making and removing test cgroups in this process: one test's removal of an
/// empty parent never races another's making a child in it.
static TREE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TestCgroup {
    /// Makes cgroup `path` (absolute, e.g. `/kubepods/besteffort/pod<uid>/<id>`) in
    /// `hierarchy`.
    pub fn new(path: &str, hierarchy: Hierarchy) -> Self {
        let mount = match hierarchy {
            Hierarchy::Unified => unified_mount().expect("cgroup2 is mounted"),
            Hierarchy::V1Pids => v1_mount("pids").expect("the v1 pids hierarchy is mounted"),
        };
        let dir = mount.join(path.trim_start_matches('/'));
        let _tree = TREE.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            path: path.to_owned(),
            dir,
            mount,
        }
    }

    /// `cmd` started inside this cgroup (it moves itself there before exec).
    pub fn spawn(&self, cmd: &mut Command) -> std::process::Child {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: between fork and exec only open, write and close run (async-signal
        // safe), on a path prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", self.path))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Its processes were killed by their owners; the kernel may take a moment to let
        // go of the cgroup (EBUSY). Then every parent left empty goes too (one still in
        // use by another cgroup refuses: ENOTEMPTY).
        let _tree = TREE.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = std::fs::remove_dir(&self.dir) {
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut parent = self.dir.clone();
        while parent.pop() && parent.starts_with(&self.mount) && parent != self.mount {
            if std::fs::remove_dir(&parent).is_err() {
                break;
            }
        }
    }
}

/// Removes a cgroup a runtime made and left (with [`remove_everywhere`]) when dropped:
/// declared before the runtime's guard, it runs after the runtime stopped, even when the
/// test panics.
pub struct Leftover {
    /// The cgroup path.
    pub path: String,
    /// How many empty parents go with it.
    pub parents: usize,
}

impl Drop for Leftover {
    fn drop(&mut self) {
        remove_everywhere(&self.path, self.parents);
    }
}

/// Removes cgroup `path` with every (empty) cgroup below it, then up to `parents` of its
/// ancestors that are empty, from every hierarchy: what a runtime made for a pod and left
/// behind (runc removes a container's own cgroup, not the parents it created, nor
/// conmon's).
pub fn remove_everywhere(path: &str, parents: usize) {
    let mut mounts: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        mounts.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    mounts.push(PathBuf::from("/sys/fs/cgroup"));
    for mount in mounts {
        let mut dir = mount.join(path.trim_start_matches('/'));
        remove_tree(&dir);
        for _ in 0..parents {
            if !dir.pop() || dir == mount || std::fs::remove_dir(&dir).is_err() {
                break;
            }
        }
    }
}

/// rmdir of `dir` and of every directory below it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
