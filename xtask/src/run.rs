//! `cargo xtask run`: build the release binary and run it in the foreground.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::bail;

use crate::{cmd, toolchain};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    toolchain::ensure_ebpf_toolchain()?;
    cmd::status(Command::new("cargo").args(["build", "--release", "--package", "listendrop"]))?;
    if !cmd::is_root() {
        bail!(
            "listendrop needs root (CAP_BPF and CAP_PERFMON) to load its eBPF programs; \
             built target/release/listendrop — run `sudo -E cargo xtask run` or \
             `sudo target/release/listendrop`"
        );
    }
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/listendrop");
    // A local run leaves nothing pinned behind unless asked to.
    let mut args = args.to_vec();
    if !args
        .iter()
        .any(|a| a.starts_with("--pin-dir") || a == "--no-pin")
    {
        args.push("--no-pin".into());
    }
    eprintln!("xtask: exec {} {}", binary.display(), args.join(" "));
    // exec: signals (Ctrl-C) go straight to the daemon, which detaches cleanly.
    let err = Command::new(&binary).args(&args).exec();
    bail!("cannot exec {}: {err}", binary.display())
}
