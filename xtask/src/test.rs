//! `cargo xtask test`: everything CI runs.

use std::process::Command;

use anyhow::bail;

use crate::{arch::Arch, cmd, toolchain};

pub fn test(vm: bool) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the privileged tests load eBPF programs and create network namespaces: run \
             `sudo -E cargo xtask test` (plain `cargo test` runs the unprivileged ones)"
        );
    }
    let venv_bin = toolchain::ensure_all()?;
    ensure_tracefs()?;
    cmd::status(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    cmd::status(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--exclude",
        "listendrop-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // LISTENDROP_REQUIRE_PRIVILEGED turns a privileged test's "skipped" into a failure.
    // The deploy tests find kubernetes-validate and python's yaml/jsonschema first on PATH.
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::status(
        Command::new("cargo")
            .args(["test", "--workspace", "--exclude", "listendrop-ebpf"])
            .env("LISTENDROP_REQUIRE_PRIVILEGED", "1")
            .env("PATH", path),
    )?;
    // The .deb and `cargo xtask install` must install the same files, for every
    // architecture.
    crate::package::check(&Arch::ALL)?;
    if vm {
        // Every run of the matrix (xtask/src/vm/matrix.rs), both architectures.
        cmd::status(Command::new("cargo").args(["xtask", "vm-test"]))?;
    } else {
        eprintln!("xtask: --no-vm: the kernel matrix was skipped (CI always runs it)");
    }
    Ok(())
}

/// Mounts tracefs if it is not (tracepoint attachment reads its event ids there).
fn ensure_tracefs() -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    cmd::status(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}
