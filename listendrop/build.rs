//! Builds the eBPF programs (listendrop-ebpf) for the BPF target with aya-build, so that
//! `include_bytes_aligned!` can embed them and the binary carries everything it needs.
//!
//! aya-build compiles them under the build script's own OUT_DIR, so every build of this
//! package (check, test, release, each target triple) compiled them again (a minute or more
//! each, six times in CI). Here aya-build works in one directory per eBPF target
//! architecture under the workspace's target directory instead: cargo's own fingerprints
//! (and lock) decide there whether anything changed, and the object is copied to OUT_DIR.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

/// The object aya-build produces: the name of listendrop-ebpf's binary target.
const OBJECT: &str = "listendrop-ebpf";

fn main() -> anyhow::Result<()> {
    if which_bpf_linker().is_none() && std::env::var_os("AYA_BUILD_SKIP").is_none() {
        return Err(anyhow!(
            "bpf-linker is not installed: run `cargo xtask test` or `cargo xtask run` once \
             (they install the eBPF toolchain), or see README.md"
        ));
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "listendrop-ebpf")
        .ok_or_else(|| anyhow!("listendrop-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("listendrop-ebpf has no manifest directory"))?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // The eBPF object depends on the target's architecture (`bpf_target_arch`, for
    // pt_regs) and endianness, nothing else of this build: one directory per pair.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let shared = metadata
        .target_directory
        .as_std_path()
        .join("ebpf")
        .join(format!("{arch}-{endian}"));
    std::fs::create_dir_all(&shared)
        .with_context(|| format!("cannot create {}", shared.display()))?;
    // aya-build reads its output directory from OUT_DIR only.
    // SAFETY (edition 2024's rule, kept here): a build script is one thread; nothing else
    // reads the environment while it changes.
    std::env::set_var("OUT_DIR", &shared);
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "listendrop-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    std::env::set_var("OUT_DIR", &out_dir);
    built?;
    if std::env::var_os("AYA_BUILD_SKIP").is_none() {
        let (from, to) = (shared.join(OBJECT), out_dir.join(OBJECT));
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
