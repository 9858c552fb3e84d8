//! Debian cloud kernels from the archive, fetched with apt through a private sources list
//! and state directory (the machine's apt configuration is never touched), unpacked once
//! into the cache and reused on every later run.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::cmd::{self, is_root};

/// The machine's deb822 sources, read for the archive URIs only.
const MACHINE_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Suites that carry the kernels: 5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm
/// security and backports), 6.16+ (trixie-backports). `true`: served by the security URI.
const SUITES: &[(&str, bool)] = &[
    ("bullseye", false),
    ("bullseye-security", true),
    ("bookworm", false),
    ("bookworm-security", true),
    ("bookworm-backports", false),
    ("trixie-backports", false),
];

/// Package indexes younger than this are not downloaded again.
const INDEX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// One unpacked kernel package.
pub struct Kernel {
    /// The series asked for, e.g. `6.1`.
    pub series: String,
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package, if it ships modules.
    pub modules: Option<PathBuf>,
}

/// Newest cloud kernel of each of `series`, downloaded and unpacked under `cache` if it is
/// not there yet.
pub fn fetch(cache: &Path, series: &[&str]) -> anyhow::Result<Vec<Kernel>> {
    let apt = Apt::new(&cache.join("apt"))?;
    apt.update_if_stale()?;
    let mut candidates = apt.candidates(series)?;
    series
        .iter()
        .map(|s| {
            let list = candidates.remove(*s).unwrap_or_default();
            obtain(&apt, &cache.join("kernels"), s, &list)
        })
        .collect()
}

/// The first of `candidates` (newest first) that is cached or can be downloaded.
fn obtain(apt: &Apt, dir: &Path, series: &str, candidates: &[Candidate]) -> anyhow::Result<Kernel> {
    let unavailable = apt.unavailable();
    let mut errors = Vec::new();
    for candidate in candidates {
        let root = dir.join(format!("{}_{}", candidate.package, candidate.version));
        if root.join(UNPACKED).is_file() {
            return kernel(series, candidate, &root);
        }
        if unavailable.contains(&candidate.key()) {
            errors.push(format!("{}: answered 404 before", candidate.key()));
            continue;
        }
        match download_and_unpack(apt, candidate, &root) {
            Ok(()) => return kernel(series, candidate, &root),
            Err(e) => {
                eprintln!("xtask: {}: {e:#}; trying an older build", candidate.key());
                if format!("{e:#}").contains("404") {
                    apt.mark_unavailable(candidate)?;
                }
                errors.push(format!("{}: {e:#}", candidate.key()));
            }
        }
    }
    if candidates.is_empty() {
        bail!("no linux-image-{series}*-cloud-amd64 package in the indexes of {SUITES:?}");
    }
    bail!(
        "no {series} cloud kernel could be downloaded:\n  {}",
        errors.join("\n  ")
    )
}

/// Downloads `candidate` into a temporary directory and unpacks it into `root`.
fn download_and_unpack(apt: &Apt, candidate: &Candidate, root: &Path) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "listendrop-vm-{}-{}",
        std::process::id(),
        candidate.package
    ));
    let _ = fs::remove_dir_all(&dir);
    let result = apt
        .download(candidate, &dir)
        .and_then(|deb| unpack(&deb, root));
    let _ = fs::remove_dir_all(&dir);
    result
}

/// A kernel package version the indexes offer.
struct Candidate {
    package: String,
    version: String,
}

impl Candidate {
    fn key(&self) -> String {
        format!("{}={}", self.package, self.version)
    }
}

/// apt with a private sources list, index directory and cache.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Writes `dir/sources.list` from the machine's archive URIs.
    fn new(dir: &Path) -> anyhow::Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", dir.display()))?;
        let sources = sources_list(&archive_uris()?);
        write_if_changed(&dir.join("sources.list"), &sources)?;
        Ok(Self { dir })
    }

    /// `program` with the options that make it use only the private state.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut command = Command::new(program);
        command.args([
            "-q",
            "-o",
            &format!("Dir::Etc::SourceList={d}/sources.list"),
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            &format!("Dir::State::Lists={d}/lists"),
            "-o",
            &format!("Dir::Cache={d}/cache"),
        ]);
        command
    }

    /// `apt-get update`, unless the indexes are younger than a day and were made from the
    /// same sources list.
    fn update_if_stale(&self) -> anyhow::Result<()> {
        let stamp = self.dir.join("updated");
        let sources = fs::read_to_string(self.dir.join("sources.list"))?;
        let fresh = fs::read_to_string(&stamp).is_ok_and(|s| s == sources)
            && fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < INDEX_MAX_AGE);
        if fresh {
            return Ok(());
        }
        let mut update = self.command("apt-get");
        if is_root() {
            // The indexes live under $HOME, where the `_apt` sandbox user cannot write;
            // say so instead of letting apt warn about it on every run.
            update.args(["-o", "APT::Sandbox::User=root"]);
        }
        if let Err(e) = cmd::status(update.arg("update")) {
            if !self.has_indexes() {
                return Err(e);
            }
            // Offline, say: the kernels cached for the old indexes still serve.
            eprintln!("xtask: warning: {e:#}; using the package indexes of the last update");
            return Ok(());
        }
        let _ = fs::remove_file(self.dir.join("unavailable"));
        fs::write(&stamp, sources).with_context(|| format!("failed to write {}", stamp.display()))
    }

    /// Whether an earlier update left package indexes.
    fn has_indexes(&self) -> bool {
        fs::read_dir(self.dir.join("lists")).is_ok_and(|entries| {
            entries
                .map_while(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// Every cloud kernel build of each of `series`, newest first.
    fn candidates(&self, series: &[&str]) -> anyhow::Result<BTreeMap<String, Vec<Candidate>>> {
        let found = cmd::output(self.command("apt-cache").args([
            "search",
            "--names-only",
            "^linux-image-.*-cloud-amd64$",
        ]))?;
        let names: Vec<&str> = found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| series_of(name).is_some_and(|s| series.contains(&s)))
            .collect();
        let mut by_series: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        if names.is_empty() {
            return Ok(by_series);
        }
        let shown = cmd::output(self.command("apt-cache").arg("show").args(&names))?;
        for candidate in stanzas(&shown) {
            if let Some(s) = series_of(&candidate.package) {
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

    /// `apt-get download` into `dir`; returns the `.deb`.
    fn download(&self, candidate: &Candidate, dir: &Path) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        if is_root() {
            // apt downloads as `_apt`, which must be able to write here.
            cmd::status(Command::new("chown").arg("_apt").arg(dir))?;
        }
        eprintln!("xtask: downloading {}", candidate.key());
        // Captured, so that a 404 is in the error and the next older build can be tried.
        cmd::output(
            self.command("apt-get")
                .args(["download", &candidate.key()])
                .current_dir(dir),
        )?;
        find_deb(dir)
    }

    /// Builds that answered 404 since the last index update.
    fn unavailable(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("unavailable"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn mark_unavailable(&self, candidate: &Candidate) -> anyhow::Result<()> {
        let path = self.dir.join("unavailable");
        let mut known = fs::read_to_string(&path).unwrap_or_default();
        known.push_str(&candidate.key());
        known.push('\n');
        fs::write(&path, known).with_context(|| format!("failed to write {}", path.display()))
    }
}

/// `(main, security)` archive URIs of the machine's deb822 sources.
fn archive_uris() -> anyhow::Result<(String, String)> {
    let text = fs::read_to_string(MACHINE_SOURCES)
        .with_context(|| format!("failed to read {MACHINE_SOURCES}"))?;
    let (mut main, mut security) = (None, None);
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let (Some(uri), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        let uri = uri.split_whitespace().next().unwrap_or(uri).to_owned();
        if suites.split_whitespace().any(|s| s.ends_with("-security")) {
            security.get_or_insert(uri);
        } else {
            main.get_or_insert(uri);
        }
    }
    match (main, security) {
        (Some(main), Some(security)) => Ok((main, security)),
        _ => bail!("{MACHINE_SOURCES} names no main and security archive URIs"),
    }
}

/// The private sources list: one line per suite in [`SUITES`].
fn sources_list((main, security): &(String, String)) -> String {
    SUITES
        .iter()
        .map(|(suite, is_security)| {
            let uri = if *is_security { security } else { main };
            format!("deb {uri} {suite} main\n")
        })
        .collect()
}

fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

/// `5.10` for `linux-image-5.10.0-46-cloud-amd64`; `None` for meta-packages such as
/// `linux-image-6.1-cloud-amd64` (nothing after `X.Y`) and `-dbg`/`-unsigned` variants.
fn series_of(package: &str) -> Option<&str> {
    let rest = package
        .strip_prefix("linux-image-")?
        .strip_suffix("-cloud-amd64")?;
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let major = digits(rest);
    let after_major = rest[major..].strip_prefix('.')?;
    let minor = digits(after_major);
    let versioned = after_major[minor..].starts_with(['.', '-', '+']);
    (major > 0 && minor > 0 && versioned).then(|| &rest[..major + 1 + minor])
}

/// `Package`/`Version` pairs of `apt-cache show` output.
fn stanzas(shown: &str) -> Vec<Candidate> {
    shown
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                    .map(|v| v.trim().to_owned())
            };
            Some(Candidate {
                package: field("Package")?,
                version: field("Version")?,
            })
        })
        .collect()
}

fn find_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::read_dir(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .map_while(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))
}

/// Marks a completely unpacked kernel directory.
const UNPACKED: &str = ".unpacked";

/// `dpkg-deb -x` into `root`, via a temporary sibling so that an interrupted run leaves
/// nothing that looks complete.
fn unpack(deb: &Path, root: &Path) -> anyhow::Result<()> {
    let mut partial = root.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)
        .with_context(|| format!("failed to create {}", partial.display()))?;
    cmd::status(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    fs::write(partial.join(UNPACKED), "")?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&partial, root)
        .with_context(|| format!("failed to move {} to {}", partial.display(), root.display()))
}

/// The kernel unpacked in `root`.
fn kernel(series: &str, candidate: &Candidate, root: &Path) -> anyhow::Result<Kernel> {
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
        series: series.to_owned(),
        package: candidate.package.clone(),
        version: candidate.version.clone(),
        release,
        vmlinuz,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::series_of;

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
        ] {
            assert_eq!(series_of(name), want, "{name}");
        }
    }
}
