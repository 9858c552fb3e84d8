//! `cargo xtask vm-test`: the privileged integration tests on several Debian cloud kernels,
//! each booted under QEMU (TCG) with an initramfs whose `/init` runs the static test binary.
//!
//! - `kernels`: the newest cloud kernel of each series, via a private apt state (cached).
//! - `binaries`: static (musl) daemon and test binaries.
//! - `image`: the VM's userspace (the initramfs) and `/init`.
//! - `qemu`: one boot, its console log, the marker, the time limit.

mod binaries;
mod image;
mod kernels;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::toolchain;
use image::{InitOptions, Rootfs};
use kernels::Kernel;
use qemu::{Boot, BootOptions};

/// Kernel series the tests run on by default: the oldest supported LTS to the newest.
const SERIES: &[&str] = &["5.10", "6.1", "6.12", "6.18"];

/// Debian packages the VM runs need on the host.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "iproute2",
    "bpftool",
    // x86_64-linux-musl-gcc: ring (rustls' crypto, the secure endpoint) compiles C and
    // assembly for the static musl binaries.
    "musl-tools",
    // protoc: the privileged test binary's CRI client (k8s-cri) is generated at build
    // time (its container tests skip in the VMs, which have no runtime).
    "protobuf-compiler",
];

/// The line `/init` prints once, followed by `PASS` or `FAIL exit=<code>`.
const MARKER: &str = "LISTENDROP-VM-RESULT:";

/// Lines of a failed kernel's console log printed at the end.
const LOG_TAIL: usize = 60;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Options {
    /// Kernel series to boot (repeatable); all of them by default.
    #[arg(long = "kernel", value_name = "SERIES", value_parser = clap::builder::PossibleValuesParser::new(SERIES))]
    kernels: Vec<String>,
    /// Print each VM's console as it runs, prefixed with the kernel series (it is always
    /// saved in target/vm/<kernel>.log).
    #[arg(long)]
    verbose: bool,
    /// Wall-clock limit per kernel, boot to power-off, in seconds; the VM is killed after.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Extra environment for the tests in the VM, e.g.
    /// `--env LISTENDROP_EXPECT_FULL_COVERAGE=1` (repeatable).
    #[arg(long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Arguments for the test binary, e.g. `-- sigterm` to run only matching tests.
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// Runs the privileged tests on each selected kernel, one VM after the other.
pub fn vm_test(opts: &Options) -> anyhow::Result<()> {
    toolchain::ensure_packages(PACKAGES)?;
    toolchain::ensure_ebpf_toolchain()?;
    binaries::ensure_musl_target()?;
    let series: Vec<&str> = SERIES
        .iter()
        .copied()
        .filter(|s| opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == s))
        .collect();
    let kernels = kernels::fetch(&cache_dir()?, &series)?;
    let root = workspace_root();
    let bins = binaries::build(&root)?;
    let out = root.join("target/vm");
    let init = InitOptions {
        env: &opts.env,
        test_args: &opts.test_args,
    };
    let rootfs = Rootfs::prepare(&out.join("rootfs"), &bins, &init)?;
    let mut runs = Vec::new();
    for kernel in &kernels {
        let boot = boot(&rootfs, kernel, &out, opts)?;
        eprintln!(
            "xtask: {}: {} in {:.0} s",
            kernel.release,
            boot.outcome,
            boot.elapsed.as_secs_f64()
        );
        runs.push((kernel, boot));
    }
    report(&runs, &out)
}

/// Packs `kernel`'s initramfs and boots it.
fn boot(rootfs: &Rootfs, kernel: &Kernel, out: &Path, opts: &Options) -> anyhow::Result<Boot> {
    let initrd = out.join(format!("initramfs-{}.cpio.gz", kernel.release));
    rootfs.pack(kernel, &initrd)?;
    qemu::boot(
        kernel,
        &BootOptions {
            initrd: &initrd,
            log: &log_path(out, kernel),
            timeout: Duration::from_secs(opts.timeout),
            verbose: opts.verbose,
        },
    )
}

/// Prints the summary table and the end of each failed kernel's log; fails if any did.
fn report(runs: &[(&Kernel, Boot)], out: &Path) -> anyhow::Result<()> {
    let failed: Vec<&Kernel> = runs
        .iter()
        .filter(|(_, b)| !b.outcome.passed())
        .map(|(k, _)| *k)
        .collect();
    for kernel in &failed {
        let log = log_path(out, kernel);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        println!("\n==> {} (last {LOG_TAIL} lines) <==", log.display());
        for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
            println!("{line}");
        }
    }
    println!(
        "\n{:<8} {:<30} {:<22} {:<28} {:>7}",
        "series", "kernel", "package version", "result", "seconds"
    );
    for (kernel, boot) in runs {
        println!(
            "{:<8} {:<30} {:<22} {:<28} {:>7.1}",
            kernel.series,
            kernel.release,
            kernel.version,
            boot.outcome.to_string(),
            boot.elapsed.as_secs_f64()
        );
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|k| k.release.as_str()).collect();
        bail!(
            "{} of {} kernels failed: {}",
            failed.len(),
            runs.len(),
            names.join(", ")
        );
    }
    Ok(())
}

fn log_path(out: &Path, kernel: &Kernel) -> PathBuf {
    out.join(format!("{}.log", kernel.release))
}

/// `LISTENDROP_VM_CACHE`, or `~/.cache/listendrop/vm`.
fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LISTENDROP_VM_CACHE") {
        return Ok(dir.into());
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set LISTENDROP_VM_CACHE")?;
    Ok(Path::new(&home).join(".cache/listendrop/vm"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `KEY=VAL` with a shell-safe variable name.
fn parse_env(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VAL, got {arg:?}"))?;
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{key:?} is not a valid environment variable name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}
