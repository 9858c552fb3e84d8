//! `cargo xtask install` and `cargo xtask deb`: the same files, by hand or as a Debian
//! package (cargo-deb), and the check that both agree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::cmd;

/// The cargo-deb release verified with this workspace (builds with rustc 1.95).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// What gets installed, relative to the root: (source in the repository, destination,
/// mode). The binary comes first.
const FILES: &[(&str, &str, u32)] = &[
    (
        "target/release/listendrop",
        "usr/local/bin/listendrop",
        0o755,
    ),
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

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_release() -> anyhow::Result<()> {
    cmd::status(Command::new("cargo").args(["build", "--release", "--package", "listendrop"]))
}

/// Installs under `destdir` (default `/`); on a live system also creates the user and
/// reloads systemd when it runs.
pub fn install(destdir: Option<&Path>) -> anyhow::Result<()> {
    build_release()?;
    let root = destdir.unwrap_or(Path::new("/"));
    let ws = workspace();
    for (src, dest, mode) in FILES {
        let dest = root.join(dest);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::copy(ws.join(src), &dest)
            .with_context(|| format!("cannot install {src} as {}", dest.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
        eprintln!("xtask: installed {}", dest.display());
    }
    if destdir.is_none() && Path::new("/run/systemd/system").is_dir() {
        cmd::status(Command::new("systemd-sysusers").arg("/usr/lib/sysusers.d/listendrop.conf"))?;
        cmd::status(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("xtask: next: systemctl enable --now listendrop");
    }
    Ok(())
}

/// Builds `target/debian/listendrop_*.deb` with cargo-deb (installed if missing).
pub fn deb() -> anyhow::Result<PathBuf> {
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
    let out = cmd::output(
        Command::new("cargo")
            .args(["deb", "--package", "listendrop"])
            .current_dir(workspace()),
    )?;
    let path = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .context("cargo deb printed no package path")?;
    Ok(PathBuf::from(path.trim()))
}

/// Builds both and checks the package holds exactly the files `install` writes, with
/// the same contents (the binary: the same `--version`).
pub fn check() -> anyhow::Result<()> {
    let tmp = workspace().join("target/package-check");
    let _ = std::fs::remove_dir_all(&tmp);
    let (by_hand, from_deb) = (tmp.join("install"), tmp.join("deb"));
    install(Some(&by_hand))?;
    let deb = deb()?;
    cmd::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&from_deb))?;
    let info = cmd::output(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    for needed in ["Package: listendrop", "postinst", "prerm"] {
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
        if dest.ends_with("bin/listendrop") {
            let version = |p: &Path| cmd::output(Command::new(p).arg("--version"));
            if version(&a)? != version(&b)? {
                bail!("the packaged binary is another version than the installed one");
            }
        } else if std::fs::read(&a)? != std::fs::read(&b)? {
            bail!("/{dest} differs between the package and `cargo xtask install`");
        }
    }
    let extra: Vec<String> = walk(&from_deb)?
        .into_iter()
        .filter(|p| !FILES.iter().any(|(_, d, _)| p == d))
        .filter(|p| !p.starts_with("usr/share/doc/listendrop/"))
        .collect();
    if !extra.is_empty() {
        bail!("the package installs files `cargo xtask install` does not: {extra:?}");
    }
    eprintln!(
        "xtask: {} and `cargo xtask install` install the same files",
        deb.display()
    );
    Ok(())
}

/// Files under `root`, relative, as strings.
fn walk(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
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
