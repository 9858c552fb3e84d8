//! Builds the eBPF programs (listendrop-ebpf) for the BPF target with aya-build, so that
//! `include_bytes_aligned!` can embed them and the binary carries everything it needs.

use anyhow::{anyhow, Context as _};

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
        .into_iter()
        .find(|p| p.name.as_str() == "listendrop-ebpf")
        .ok_or_else(|| anyhow!("listendrop-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("listendrop-ebpf has no manifest directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "listendrop-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
