//! `cargo xtask install` and `cargo xtask deb`: the same files, by hand or as a Debian
//! package (cargo-deb), for the host's architecture (a native build) or another one (a
//! static musl build, cross-linked with rust-lld), and the check that both agree.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{arch::Arch, cmd, toolchain};

/// The cargo-deb release verified with this workspace (builds with rustc 1.95).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the binary goes, relative to the root.
const BINARY: &str = "usr/local/bin/listendrop";

/// What else gets installed, relative to the root: (source in the repository,
/// destination, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/listendrop.service",
        "etc/systemd/system/listendrop.service",
        0o644,
    ),
    (
        "deploy/systemd/listendrop.sysusers",
        "usr/lib/sysusers.d/listendrop.conf",
        0o644,
    ),
    (
        "deploy/config.example.toml",
        "etc/listendrop/config.example.toml",
        0o644,
    ),
    (
        "deploy/web-config.example.yml",
        "etc/listendrop/web-config.example.yml",
        0o644,
    ),
    ("README.md", "usr/share/doc/listendrop/README.md", 0o644),
];

/// `--arch` of `install` and `deb`.
#[derive(clap::Args)]
pub struct ArchOption {
    /// Architecture of the binary: the host's is built natively (as `cargo build
    /// --release`), another one statically for musl (no cross C toolchain needed).
    #[arg(long, value_enum, value_name = "ARCH", default_value_t = Arch::host())]
    pub arch: Arch,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release binary for `arch`; returns it.
fn build_release(arch: Arch) -> anyhow::Result<PathBuf> {
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--release", "--package", "listendrop"]);
    let dir = match arch.release_target() {
        Some(target) => {
            toolchain::ensure_musl_target(arch)?;
            cargo
                .args(["--target", target])
                .envs(toolchain::musl_c_env(arch)?);
            format!("target/{target}/release")
        }
        None => "target/release".to_owned(),
    };
    cmd::status(cargo.current_dir(workspace()))?;
    Ok(workspace().join(dir).join("listendrop"))
}

/// Installs `arch`'s binary and the other files under `destdir` (default `/`); on a live
/// system also creates the user and reloads systemd when it runs.
pub fn install(arch: Arch, destdir: Option<&Path>) -> anyhow::Result<()> {
    let binary = build_release(arch)?;
    let root = destdir.unwrap_or(Path::new("/"));
    let ws = workspace();
    let files = FILES
        .iter()
        .map(|(src, dest, mode)| (ws.join(src), *dest, *mode));
    for (src, dest, mode) in std::iter::once((binary, BINARY, 0o755)).chain(files) {
        let dest = root.join(dest);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::copy(&src, &dest)
            .with_context(|| format!("cannot install {} as {}", src.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        eprintln!("xtask: installed {}", dest.display());
    }
    if destdir.is_none() && Path::new("/run/systemd/system").is_dir() {
        cmd::status(Command::new("systemd-sysusers").arg("/usr/lib/sysusers.d/listendrop.conf"))?;
        cmd::status(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("xtask: next: systemctl enable --now listendrop");
    }
    Ok(())
}

/// The `strip` cargo-deb runs on `arch`'s binary (it finds Debian's cross binutils by
/// their name), and the Debian package that has it.
fn strip_program(arch: Arch) -> (String, String) {
    match arch.release_target() {
        None => ("strip".to_owned(), "binutils".to_owned()),
        Some(_) => {
            let triplet = arch.multiarch();
            (
                format!("{triplet}-strip"),
                format!("binutils-{}", triplet.replace('_', "-")),
            )
        }
    }
}

/// Builds the .deb of `arch` with cargo-deb (installed if missing); returns its path.
pub fn deb(arch: Arch) -> anyhow::Result<PathBuf> {
    let installed = cmd::probe(Command::new("cargo").args(["deb", "--version"])).is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION)
    });
    if !installed {
        cmd::status(Command::new("cargo").args([
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
        ]))?;
    }
    let mut cargo = Command::new("cargo");
    cargo.args(["deb", "--package", "listendrop"]);
    if let Some(target) = arch.release_target() {
        toolchain::ensure_musl_target(arch)?;
        toolchain::ensure_packages(&[&strip_program(arch).1])?;
        // cargo-deb maps the asset `target/release/listendrop` to this target's build.
        cargo
            .args(["--target", target])
            .envs(toolchain::musl_c_env(arch)?);
    }
    let out = cmd::output(cargo.current_dir(workspace()))?;
    let path = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .context("cargo deb printed no package path")?;
    Ok(PathBuf::from(path.trim()))
}

/// For each of `arches`: builds both and checks the package holds exactly the files
/// `install` writes, with the same contents (the binary as cargo-deb strips it), an
/// executable of that architecture, and that every package holds the same file list.
pub fn check(arches: &[Arch]) -> anyhow::Result<()> {
    toolchain::ensure_packages(&["file", "binutils"])?;
    let mut lists: Vec<(Arch, Vec<String>)> = Vec::new();
    for &arch in arches {
        let files = check_one(arch)?;
        if let Some((other, theirs)) = lists.first() {
            if *theirs != files {
                bail!(
                    "the {arch} and {other} packages hold different files:\n  {arch}: \
                     {files:?}\n  {other}: {theirs:?}"
                );
            }
        }
        lists.push((arch, files));
    }
    Ok(())
}

/// Checks `arch`'s .deb against `install`; returns the files the package installs.
fn check_one(arch: Arch) -> anyhow::Result<Vec<String>> {
    let tmp = workspace().join(format!("target/package-check/{arch}"));
    let _ = fs::remove_dir_all(&tmp);
    let (by_hand, from_deb) = (tmp.join("install"), tmp.join("deb"));
    install(arch, Some(&by_hand))?;
    let deb = deb(arch)?;
    cmd::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&from_deb))?;
    let info = cmd::output(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    let architecture = format!("Architecture: {arch}");
    for needed in ["Package: listendrop", &architecture, "postinst", "prerm"] {
        if !info.contains(needed) {
            bail!(
                "{}: no {needed} in `dpkg-deb --info`:\n{info}",
                deb.display()
            );
        }
    }
    for (_, dest, _) in FILES {
        let (a, b) = (by_hand.join(dest), from_deb.join(dest));
        if !b.exists() {
            bail!(
                "{} lacks /{dest}, which `cargo xtask install` installs",
                deb.display()
            );
        }
        if fs::read(&a)? != fs::read(&b)? {
            bail!("/{dest} differs between the package and `cargo xtask install`");
        }
    }
    check_binary(arch, &by_hand.join(BINARY), &from_deb.join(BINARY), &tmp)
        .with_context(|| format!("{}: /{BINARY}", deb.display()))?;
    let mut files = walk(&from_deb)?;
    files.sort();
    let extra: Vec<&String> = files
        .iter()
        .filter(|p| *p != BINARY && !FILES.iter().any(|(_, d, _)| p == d))
        .filter(|p| !p.starts_with("usr/share/doc/listendrop/"))
        .collect();
    if !extra.is_empty() {
        bail!("the package installs files `cargo xtask install` does not: {extra:?}");
    }
    eprintln!(
        "xtask: {} and `cargo xtask install --arch {arch}` install the same files",
        deb.display()
    );
    Ok(files)
}

/// The packaged binary is `installed` as cargo-deb strips it, and an executable of `arch`
/// (static unless it is the host's native build).
fn check_binary(arch: Arch, installed: &Path, packaged: &Path, tmp: &Path) -> anyhow::Result<()> {
    let (strip, _) = strip_program(arch);
    let stripped = tmp.join("listendrop.stripped");
    // The arguments cargo-deb (like dh_strip) gives it.
    cmd::status(
        Command::new(&strip)
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                "-o",
            ])
            .arg(&stripped)
            .arg(installed),
    )?;
    if fs::read(&stripped)? != fs::read(packaged)? {
        bail!(
            "it is not the binary `cargo xtask install` installs ({}), stripped as cargo-deb \
             does ({strip})",
            installed.display()
        );
    }
    let described = cmd::output(Command::new("file").arg("-b").arg(packaged))?;
    let mut expected = vec!["ELF 64-bit", arch.file_machine()];
    if arch.release_target().is_some() {
        expected.push("statically linked");
    }
    if let Some(missing) = expected.iter().find(|e| !described.contains(*e)) {
        bail!("`file` says {:?}: not {missing}", described.trim());
    }
    Ok(())
}

/// Files under `root`, relative, as strings.
fn walk(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root)?.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}
