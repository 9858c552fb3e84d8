//! Debian cloud kernels from the archive, fetched with the private apt state of their
//! architecture, unpacked once into the cache and reused on every later run.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use super::apt::{self, Apt, Candidate};
use crate::arch::Arch;

/// One unpacked kernel package.
pub struct Kernel {
    pub arch: Arch,
    /// The series asked for, e.g. `6.1`.
    pub series: String,
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bootable image, given to QEMU's `-kernel` as it is: a bzImage on amd64, an
    /// uncompressed (PE) Image on arm64.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package, if it ships modules.
    pub modules: Option<PathBuf>,
    /// Newer builds of the series the indexes name but that could not be downloaded,
    /// with why: the run used an older build, and the summary says so.
    pub skipped: Vec<String>,
}

/// Newest cloud kernel of each of `series` that can be had, downloaded and unpacked under
/// `cache` if it is not there yet.
pub fn fetch(apt: &Apt, cache: &Path, series: &[&str]) -> anyhow::Result<Vec<Kernel>> {
    let mut candidates = candidates(apt, series)?;
    series
        .iter()
        .map(|s| {
            let list = candidates.remove(*s).unwrap_or_default();
            obtain(apt, &cache.join("kernels"), s, &list)
        })
        .collect()
}

/// The first of `candidates` (newest first) that is cached or can be downloaded.
fn obtain(apt: &Apt, dir: &Path, series: &str, candidates: &[Candidate]) -> anyhow::Result<Kernel> {
    let unavailable = apt.unavailable();
    let mut skipped = Vec::new();
    for candidate in candidates {
        let root = dir.join(format!("{}_{}", candidate.package, candidate.version));
        if apt::is_unpacked(&root) {
            return kernel(apt.arch, series, candidate, &root, skipped);
        }
        if unavailable.contains(&candidate.key()) {
            skipped.push(format!("{}: answered 404 (earlier run)", candidate.key()));
            continue;
        }
        match apt::fetch_unpacked(apt, std::slice::from_ref(candidate), &root) {
            Ok(()) => return kernel(apt.arch, series, candidate, &root, skipped),
            Err(e) => {
                eprintln!("xtask: {}: {e:#}; trying an older build", candidate.key());
                let e = format!("{e:#}");
                if e.contains("404") {
                    apt.mark_unavailable(candidate)?;
                    skipped.push(format!("{}: answered 404", candidate.key()));
                } else {
                    skipped.push(format!("{}: {e}", candidate.key()));
                }
            }
        }
    }
    let arch = apt.arch;
    if candidates.is_empty() {
        bail!(
            "no linux-image-{series}*-cloud-{arch} package in the package indexes: is the \
             series still in the suites xtask/src/vm/apt.rs lists?"
        );
    }
    bail!(
        "no {series} {arch} cloud kernel could be downloaded (a network problem, or every \
         build gone from the archive):\n  {}",
        skipped.join("\n  ")
    )
}

/// Every cloud kernel build of each of `series`, newest first.
fn candidates(apt: &Apt, series: &[&str]) -> anyhow::Result<BTreeMap<String, Vec<Candidate>>> {
    let arch = apt.arch;
    let names: Vec<String> = apt
        .search(&format!("^linux-image-.*-cloud-{arch}$"))?
        .into_iter()
        .filter(|name| series_of(name, arch).is_some_and(|s| series.contains(&s)))
        .collect();
    let mut by_series: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for candidate in apt.versions(&names)? {
        if let Some(s) = series_of(&candidate.package, arch) {
            by_series.entry(s.to_owned()).or_default().push(candidate);
        }
    }
    for list in by_series.values_mut() {
        // Newest first, as dpkg orders versions (unparsable ones last).
        list.sort_by_cached_key(|c| {
            std::cmp::Reverse(c.version.parse::<debversion::Version>().ok())
        });
        list.dedup_by(|a, b| a.key() == b.key());
    }
    Ok(by_series)
}

/// `5.10` for `linux-image-5.10.0-46-cloud-amd64`; `None` for meta-packages such as
/// `linux-image-6.1-cloud-amd64` (nothing after `X.Y`), `-dbg`/`-unsigned` variants and
/// other architectures.
fn series_of(package: &str, arch: Arch) -> Option<&str> {
    let rest = package
        .strip_prefix("linux-image-")?
        .strip_suffix(arch.debian())?
        .strip_suffix("-cloud-")?;
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let major = digits(rest);
    let after_major = rest[major..].strip_prefix('.')?;
    let minor = digits(after_major);
    let versioned = after_major[minor..].starts_with(['.', '-', '+']);
    (major > 0 && minor > 0 && versioned).then(|| &rest[..major + 1 + minor])
}

/// The kernel unpacked in `root`.
fn kernel(
    arch: Arch,
    series: &str,
    candidate: &Candidate,
    root: &Path,
    skipped: Vec<String>,
) -> anyhow::Result<Kernel> {
    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("failed to read {}", boot.display()))?
        .map_while(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz file name")?
        .to_owned();
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.is_dir());
    Ok(Kernel {
        arch,
        series: series.to_owned(),
        package: candidate.package.clone(),
        version: candidate.version.clone(),
        release,
        vmlinuz,
        modules,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::series_of;
    use crate::arch::Arch;

    #[test]
    fn series_from_package_names() {
        for (name, want) in [
            ("linux-image-5.10.0-46-cloud-amd64", Some("5.10")),
            ("linux-image-6.1.0-56-cloud-amd64", Some("6.1")),
            ("linux-image-6.1.0-0.deb11.52-cloud-amd64", Some("6.1")),
            ("linux-image-6.12.95+deb12-cloud-amd64", Some("6.12")),
            ("linux-image-6.12.90+deb12.1-cloud-amd64", Some("6.12")),
            ("linux-image-6.18.15+deb13-cloud-amd64", Some("6.18")),
            ("linux-image-6.1-cloud-amd64", None),
            ("linux-image-6.12-cloud-amd64", None),
            ("linux-image-cloud-amd64", None),
            ("linux-image-6.1.0-56-cloud-amd64-dbg", None),
            ("linux-image-6.1.0-56-cloud-amd64-unsigned", None),
            ("linux-image-6.1.0-56-cloud-arm64", None),
        ] {
            assert_eq!(series_of(name, Arch::Amd64), want, "{name}");
        }
        for (name, want) in [
            ("linux-image-5.10.0-32-cloud-arm64", Some("5.10")),
            ("linux-image-6.18.15+deb13-cloud-arm64", Some("6.18")),
            ("linux-image-6.1-cloud-arm64", None),
            ("linux-image-6.1.0-56-cloud-amd64", None),
        ] {
            assert_eq!(series_of(name, Arch::Arm64), want, "{name}");
        }
    }
}
