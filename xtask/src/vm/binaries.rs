//! Release builds of the daemon and of the privileged integration test binary for each
//! guest architecture, as the .deb of that architecture is built (`Arch::release_target`):
//! the host's natively (its glibc and loader go into the guests' initramfs with the tools'
//! libraries, xtask/src/vm/image.rs), another one static for musl (cross-linked with
//! `rust-lld`, `.cargo/config.toml`). Built so, they reuse what the .deb's build compiled
//! (`cargo xtask test` builds both debs first). Also how many tests a filter selects.

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

/// Builds both binaries for `arch` in the workspace at `root`: one `cargo test --no-run`,
/// which builds the daemon for the integration tests too. Its dependencies are the .deb's
/// build's, with the same features (the test support's CRI client is a feature only the
/// container tests enable), so after `cargo xtask deb` only the tests' own crates compile.
pub fn build(root: &Path, arch: Arch) -> anyhow::Result<Binaries> {
    let (cargo, messages) = build_test_target(root, arch)?;
    Ok(Binaries {
        daemon: pick(&cargo, &messages, "bin", "listendrop")?,
        tests: pick(&cargo, &messages, "test", "privileged")?,
    })
}

/// Builds the privileged test binary for `arch`.
pub fn build_tests(root: &Path, arch: Arch) -> anyhow::Result<PathBuf> {
    let (cargo, messages) = build_test_target(root, arch)?;
    pick(&cargo, &messages, "test", "privileged")
}

/// `cargo test --release --no-run` of the privileged tests for `arch` with JSON messages:
/// the command as shown and its messages. Diagnostics and progress still go to the
/// terminal.
fn build_test_target(root: &Path, arch: Arch) -> anyhow::Result<(String, String)> {
    let mut cargo = Command::new("cargo");
    cargo.args([
        "test",
        "--release",
        "-p",
        "listendrop",
        "--test",
        "privileged",
        "--no-run",
    ]);
    if let Some(target) = arch.release_target() {
        cargo
            .args(["--target", target])
            .envs(toolchain::musl_c_env(arch)?);
    }
    cargo
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit());
    eprintln!("xtask: running {}", cmd::show(&cargo));
    let messages = cmd::output(&mut cargo)?;
    Ok((cmd::show(&cargo), messages))
}

/// The executable of target `name` of kind `kind` that `cargo` reported in `messages`.
fn pick(cargo: &str, messages: &str, kind: &str, name: &str) -> anyhow::Result<PathBuf> {
    find_executable(messages, kind, name)
        .map(PathBuf::from)
        .with_context(|| format!("{cargo} reported no executable for {kind} {name}"))
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

    #[test]
    fn finds_the_daemon_built_for_the_tests() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"crate_types":["bin"],"name":"listendrop"},"executable":"/t/listendrop","fresh":false}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"privileged"},"executable":"/t/deps/privileged-0a1b","fresh":false}"#,
        );
        assert_eq!(
            find_executable(messages, "bin", "listendrop").as_deref(),
            Some("/t/listendrop")
        );
    }
}
