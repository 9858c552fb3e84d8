//! The external tools these tests drive (systemd-analyze, promtool, prometheus,
//! kubernetes-validate, python3, setpriv), temporary directories, and paths into
//! `deploy/`.
//!
//! A missing tool skips the test with a printed reason, unless
//! `LISTENDROP_REQUIRE_PRIVILEGED` is set (`cargo xtask test`, CI): then it is a failure.
//! `deploy/ci-packages.txt` lists the packages that provide them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

/// `deploy/<rel>` in this repository.
pub fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

/// A file of this test target's directory (`listendrop/tests/deploy/<rel>`).
pub fn own(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/deploy")
        .join(rel)
}

/// Skips (prints why and returns `false`) or, under `LISTENDROP_REQUIRE_PRIVILEGED`,
/// fails.
pub fn skip(test: &str, why: &str) -> bool {
    let why = format!("{test}: skipped: {why} (deploy/ci-packages.txt lists what to install)");
    if std::env::var_os("LISTENDROP_REQUIRE_PRIVILEGED").is_some() {
        panic!("{why}; LISTENDROP_REQUIRE_PRIVILEGED is set, so skipping is an error");
    }
    println!("{why}");
    false
}

pub use crate::support::tools::which;

/// `program` if it is installed; otherwise skips (or fails, see [`skip`]).
pub fn require(test: &str, program: &str, package: &str) -> Option<PathBuf> {
    match which(program) {
        Some(path) => Some(path),
        None => {
            skip(
                test,
                &format!("`{program}` is not installed (package {package})"),
            );
            None
        }
    }
}

/// Whether python3 with PyYAML and jsonschema is there (both come with the PyPI package
/// kubernetes-validate); otherwise skips (or fails).
pub fn require_python(test: &str) -> bool {
    let ok = which("python3").is_some()
        && Command::new("python3")
            .args(["-c", "import yaml, jsonschema"])
            .output()
            .is_ok_and(|o| o.status.success());
    ok || skip(
        test,
        "python3 with the modules yaml and jsonschema is not installed (PyPI \
         kubernetes-validate brings both)",
    )
}

/// Runs a command to completion; panics if it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// stdout and stderr together, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every YAML document of `path`, as JSON (PyYAML's safe loader).
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let out = output(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
         json.dump([d for d in docs if d is not None], sys.stdout)",
            )
            .arg(path),
    );
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
    let serde_json::Value::Array(docs) =
        serde_json::from_slice(&out.stdout).expect("python printed JSON")
    else {
        panic!("not a list")
    };
    docs
}

/// The one YAML document of `path`.
pub fn yaml(path: &Path) -> serde_json::Value {
    let mut docs = yaml_documents(path);
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory (mode 0755, so that an unprivileged uid may run what is in it),
/// removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it under the system's temporary directory.
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!(
            "listendrop-deploy-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `from` to `to`, creating `to`'s parents.
pub fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}
