//! Static (musl) builds of the daemon and of the privileged integration test binary, so
//! that they run in an initramfs without any shared library, for each guest architecture
//! (cross-built where it is not the host's: `.cargo/config.toml` links with `rust-lld`),
//! and how many tests a filter selects.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{arch::Arch, cmd, toolchain};

/// What the VMs run.
pub struct Binaries {
    /// The listendrop daemon.
    pub daemon: PathBuf,
    /// The `privileged` integration test binary (libtest harness).
    pub tests: PathBuf,
}

/// Builds both binaries for `arch` in the workspace at `root`.
pub fn build(root: &Path, arch: Arch) -> anyhow::Result<Binaries> {
    let target = arch.musl_target();
    let daemon = executable(
        root,
        arch,
        &["build", "--release", "--target", target, "-p", "listendrop"],
        "bin",
        "listendrop",
    )?;
    let tests = build_tests(root, arch)?;
    Ok(Binaries { daemon, tests })
}

/// Builds the privileged test binary for `arch`.
pub fn build_tests(root: &Path, arch: Arch) -> anyhow::Result<PathBuf> {
    executable(
        root,
        arch,
        &[
            "test",
            "--release",
            "--target",
            arch.musl_target(),
            "-p",
            "listendrop",
            "--test",
            "privileged",
            "--no-run",
        ],
        "test",
        "privileged",
    )
}

/// How many tests `tests` (a libtest binary this host can run) passes when they all pass
/// with `args`: those `--list` names, less the ignored ones.
pub fn count_tests(tests: &Path, args: &[String]) -> anyhow::Result<usize> {
    let list = |extra: &[&str]| -> anyhow::Result<usize> {
        let out = cmd::output(Command::new(tests).arg("--list").args(extra).args(args))?;
        Ok(listed(&out))
    };
    let all = list(&[])?;
    let runs_ignored = args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored");
    Ok(all
        - if runs_ignored {
            0
        } else {
            list(&["--ignored"])?
        })
}

/// Tests in libtest's `--list` output (`name: test` lines).
fn listed(out: &str) -> usize {
    out.lines().filter(|l| l.ends_with(": test")).count()
}

/// Runs `cargo args` (a build for `arch`) with JSON messages and returns the executable of
/// the target `name` of kind `kind`. Diagnostics and progress still go to the terminal.
fn executable(
    root: &Path,
    arch: Arch,
    args: &[&str],
    kind: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let mut cargo = Command::new("cargo");
    cargo
        .args(args)
        .envs(toolchain::musl_c_env(arch)?)
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
    use super::{find_executable, listed};

    #[test]
    fn counts_listed_tests() {
        let out = "ack::overflow: test\nsyn::queue_full: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(listed(out), 2);
        assert_eq!(listed("0 tests, 0 benchmarks\n"), 0);
    }

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
