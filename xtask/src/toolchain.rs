//! Makes sure the eBPF toolchain (nightly rust-src, llvm-N-dev, bpf-linker built for
//! llvm-N) and the test tools are installed. Each check is quick when the piece is there,
//! and each install is the exact command README.md documents.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::{
    arch::Arch,
    cmd::{self, is_root},
};

/// The bpf-linker release verified with this workspace's aya line.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests use: ip/nstat/ss (iproute2), bpftool, setpriv (util-linux),
/// sysctl (procps); the container tests' runtimes (podman with runc, conmon and the CNI
/// plugins; containerd) and their image's only file (busybox-static), and protoc for the
/// build of their CRI client (protobuf-compiler). The benchmarks use podman too.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "util-linux",
    "procps",
    "podman",
    "runc",
    "conmon",
    "containernetworking-plugins",
    "containerd",
    "busybox-static",
    "protobuf-compiler",
    // The tests' independent witness of what the kernel hands to eBPF programs
    // (listendrop-testsupport's witness.rs).
    "bpftrace",
];

/// Installs everything building and testing need; returns the directory of the test
/// tools from PyPI (a virtualenv's `bin`), to put first on PATH.
pub fn ensure_all() -> anyhow::Result<PathBuf> {
    ensure_ebpf_toolchain()?;
    ensure_packages(TEST_PACKAGES)?;
    ensure_deploy_tools()
}

/// The Debian and PyPI packages the deploy tests use, listed in `deploy/ci-packages.txt`
/// (`debian NAME` / `pypi NAME==VERSION`). PyPI packages go into a virtualenv under
/// `target/` (Debian's python refuses system-wide pip installs, PEP 668).
fn ensure_deploy_tools() -> anyhow::Result<PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let list = root.join("deploy/ci-packages.txt");
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("cannot read {}", list.display()))?;
    let entries: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(kind, name)| (kind, name.trim()))
        .collect();
    let debian: Vec<&str> = entries
        .iter()
        .filter(|(k, _)| *k == "debian")
        .map(|(_, n)| *n)
        .collect();
    let mut debian = debian;
    debian.push("python3-venv");
    ensure_packages(&debian)?;
    let venv = root.join("target/ci-venv");
    let bin = venv.join("bin");
    if !bin.join("python3").exists() {
        cmd::status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    for (_, spec) in entries.iter().filter(|(k, _)| *k == "pypi") {
        let (name, version) = spec.split_once("==").unwrap_or((spec, ""));
        let installed =
            cmd::probe(Command::new(bin.join("python3")).args(["-m", "pip", "show", name]))
                .map(|o| {
                    o.status.success()
                        && (version.is_empty()
                            || String::from_utf8_lossy(&o.stdout)
                                .contains(&format!("Version: {version}\n")))
                })
                .unwrap_or(false);
        if !installed {
            cmd::status(
                Command::new(bin.join("python3")).args(["-m", "pip", "install", "-q", spec]),
            )?;
        }
    }
    Ok(bin)
}

/// Installs what building the eBPF programs needs.
pub fn ensure_ebpf_toolchain() -> anyhow::Result<()> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the nightly Rust toolchain is missing; install the one this project is verified \
             with: `rustup toolchain install nightly-2026-05-20 --profile minimal --component \
             rust-src` and make it `nightly` (see README.md, \"Toolchain\")"
        );
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        cmd::status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    let llvm = nightly_llvm_major()?;
    let dev = format!("llvm-{llvm}-dev");
    ensure_packages(&[&dev, "libzstd-dev", "zlib1g-dev"])?;

    if !bpf_linker_matches(llvm) {
        let llvm_bin = format!("/usr/lib/llvm-{llvm}/bin");
        let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
        cmd::status(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--force",
                ])
                .args([
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{llvm}"),
                ])
                .env("PATH", path),
        )?;
        if !bpf_linker_matches(llvm) {
            bail!("bpf-linker was installed but is not linked against LLVM {llvm}");
        }
    }
    Ok(())
}

/// Adds `arch`'s musl target (static builds of an architecture that is not the host's: its
/// .deb and its guests' binaries) to the active toolchain if it is missing.
pub fn ensure_musl_target(arch: Arch) -> anyhow::Result<()> {
    let target = arch.musl_target();
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    cmd::status(Command::new("rustup").args(["target", "add", target]))
}

/// Installs what the C code of `arch`'s static (musl) build needs (ring, under rustls,
/// compiles C and assembly for the target) and returns the environment cargo needs for
/// it. This host is x86-64.
pub fn musl_c_env(arch: Arch) -> anyhow::Result<Vec<(String, String)>> {
    match arch {
        // musl-tools' x86_64-linux-musl-gcc, which the cc crate finds by that name.
        Arch::Amd64 => {
            ensure_packages(&["musl-tools"])?;
            Ok(Vec::new())
        }
        // Debian has no musl cross compiler for arm64, but ring builds for aarch64 musl
        // with clang and no sysroot (-nostdlibinc): the clang of the LLVM the eBPF
        // toolchain already has.
        Arch::Arm64 => {
            let llvm = nightly_llvm_major()?;
            ensure_packages(&[&format!("clang-{llvm}")])?;
            let bin = format!("/usr/lib/llvm-{llvm}/bin");
            let target = arch.musl_target().replace('-', "_");
            Ok(vec![
                (format!("CC_{target}"), format!("{bin}/clang")),
                (format!("AR_{target}"), format!("{bin}/llvm-ar")),
            ])
        }
    }
}

/// The LLVM major version of the nightly compiler (`rustc +nightly -vV`).
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let out = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("`rustc +nightly -vV` printed no LLVM version")
}

/// Whether an installed bpf-linker links the LLVM `major` shared library.
fn bpf_linker_matches(major: u32) -> bool {
    let Some(linker) = which("bpf-linker") else {
        return false;
    };
    let Ok(out) = cmd::probe(Command::new("ldd").arg(&linker)) else {
        return false;
    };
    let libs = String::from_utf8_lossy(&out.stdout);
    libs.contains(&format!("libLLVM.so.{major}")) || libs.contains(&format!("libLLVM-{major}"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Installs the Debian packages among `names` that are not installed yet.
pub fn ensure_packages(names: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| {
            cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages and not root; run as root: \
             apt-get update && apt-get install -y {}",
            missing.join(" ")
        );
    }
    // The package index may be stale or absent on a fresh machine.
    cmd::status(Command::new("apt-get").args(["update", "-q"]))?;
    cmd::status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
