//! Running external commands with their name in every error.

use std::process::{Command, Output};

use anyhow::{bail, Context as _};

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd`, capturing its output; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = probe(cmd).with_context(|| format!("failed to run {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`, capturing its output, whatever its exit status.
pub fn probe(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.output()
}

/// A command line as a user would type it.
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts tracefs if it is not (tracepoint attachment, ours and bpftrace's, reads its event
/// ids there; a fresh machine may not have it mounted).
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    status(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}
