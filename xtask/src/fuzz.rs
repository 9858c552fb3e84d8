//! `cargo xtask fuzz`: every fuzz target of fuzz/ for a bounded time (cargo-fuzz,
//! libFuzzer, nightly). A crash fails the run and leaves its input in fuzz/artifacts/.

use std::{path::Path, process::Command};

use crate::cmd;

/// The cargo-fuzz release verified here.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets (fuzz/fuzz_targets/*.rs), each with its seeds in fuzz/seeds/<name>/.
const TARGETS: &[&str] = &[
    "decode_event",
    "config_file",
    "netstat",
    "sock_diag",
    "tracefs_format",
    "web_config",
    "container_identity",
];

pub fn fuzz(seconds: u64) -> anyhow::Result<()> {
    crate::toolchain::ensure_ebpf_toolchain()?;
    let installed = cmd::probe(Command::new("cargo").args(["fuzz", "--version"]))
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if !installed {
        cmd::status(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))?;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for target in TARGETS {
        let corpus = format!("fuzz/corpus/{target}");
        std::fs::create_dir_all(root.join(&corpus))?;
        cmd::status(
            Command::new("cargo")
                .args([
                    "+nightly",
                    "fuzz",
                    "run",
                    target,
                    &corpus,
                    &format!("fuzz/seeds/{target}"),
                ])
                .args(["--", &format!("-max_total_time={seconds}")])
                .current_dir(&root),
        )?;
    }
    eprintln!(
        "xtask: {} fuzz targets ran {seconds} s each without a crash",
        TARGETS.len()
    );
    Ok(())
}
