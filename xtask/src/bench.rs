//! `cargo xtask bench`: runs listendrop/benches/overhead.rs (as root) and adds its report
//! to docs/benchmarks.md, newest first.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::{cmd, toolchain};

const HEADER: &str = "# listendrop benchmarks\n\n\
Each section is one run of `cargo xtask bench` on the machine named in it: listendrop and \
the comparison (bpftrace, no daemon) measured side by side on the same workload. eBPF \
costs come from the kernel's own accounting (`kernel.bpf_stats_enabled`, `run_time_ns / \
run_cnt`). Targets are from issues #6 and #11; a missed one is marked and explained below its table.\n\n";

pub fn bench() -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the benchmarks load eBPF programs and create namespaces: run `sudo -E cargo xtask bench`");
    }
    toolchain::ensure_all()?;
    toolchain::ensure_packages(&["bpftrace"])?;
    cmd::ensure_tracefs()?;
    let out = Command::new("cargo")
        .args(["bench", "--package", "listendrop", "--bench", "overhead"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("failed to run cargo bench")?;
    if !out.status.success() {
        bail!("cargo bench failed ({})", out.status);
    }
    let report = String::from_utf8_lossy(&out.stdout);
    let report = report
        .lines()
        .skip_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let previous = old.strip_prefix(HEADER).unwrap_or(&old);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, format!("{HEADER}{report}\n\n{previous}"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask: report added to {}", path.display());
    Ok(())
}
