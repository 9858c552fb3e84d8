//! Static (musl) builds of the daemon and of the privileged integration test binary, so
//! that they run in an initramfs without any shared library.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::cmd;

/// The target of the binaries that go into the VMs.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// What the VMs run.
pub struct Binaries {
    /// The listendrop daemon.
    pub daemon: PathBuf,
    /// The `privileged` integration test binary (libtest harness).
    pub tests: PathBuf,
}

/// Adds the musl target to the active toolchain if it is missing.
pub fn ensure_musl_target() -> anyhow::Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    cmd::status(Command::new("rustup").args(["target", "add", TARGET]))
}

/// Builds both binaries in the workspace at `root`.
pub fn build(root: &Path) -> anyhow::Result<Binaries> {
    let daemon = executable(
        root,
        &["build", "--release", "--target", TARGET, "-p", "listendrop"],
        "bin",
        "listendrop",
    )?;
    let tests = executable(
        root,
        &[
            "test",
            "--release",
            "--target",
            TARGET,
            "-p",
            "listendrop",
            "--test",
            "privileged",
            "--no-run",
        ],
        "test",
        "privileged",
    )?;
    Ok(Binaries { daemon, tests })
}

/// Runs `cargo args` with JSON messages and returns the executable of the target `name`
/// of kind `kind`. Diagnostics and progress still go to the terminal.
fn executable(root: &Path, args: &[&str], kind: &str, name: &str) -> anyhow::Result<PathBuf> {
    let mut cargo = Command::new("cargo");
    cargo
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit());
    eprintln!("xtask: running {}", cmd::show(&cargo));
    let messages = cmd::output(&mut cargo)?;
    find_executable(&messages, kind, name)
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "{} reported no executable for {kind} {name}",
                cmd::show(&cargo)
            )
        })
}

/// The `"executable"` of the `compiler-artifact` message for target `name` of `kind`: a
/// line scan, enough for cargo's one-object-per-line JSON.
fn find_executable(messages: &str, kind: &str, name: &str) -> Option<String> {
    let kind = format!("\"kind\":[\"{kind}\"]");
    let name = format!("\"name\":\"{name}\"");
    messages
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter(|l| l.contains(&kind) && l.contains(&name))
        .find_map(|l| {
            let rest = l.split("\"executable\":\"").nth(1)?;
            Some(rest.split('"').next()?.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::find_executable;

    #[test]
    fn finds_the_test_executable() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"privileged"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"privileged"},"executable":"/t/deps/privileged-0a1b","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            find_executable(messages, "test", "privileged").as_deref(),
            Some("/t/deps/privileged-0a1b")
        );
        assert_eq!(find_executable(messages, "bin", "privileged"), None);
    }
}
