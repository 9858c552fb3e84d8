//! apt with a private sources list, index directory and cache, one per architecture (the
//! machine's apt configuration and dpkg architecture are never touched), and unpacking
//! what it downloads.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::{
    arch::Arch,
    cmd::{self, is_root},
};

/// The machine's deb822 sources, read for the archive URIs only.
const MACHINE_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Suites that carry the kernels: 5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm
/// security and backports), 6.16+ (trixie-backports). `true`: served by the security URI.
/// The guests' tools come from the same indexes: apt's candidates are bookworm's
/// (backports are never candidates unless asked for).
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

/// Marks a completely unpacked directory.
const UNPACKED: &str = ".unpacked";

/// One version of one package, as the indexes offer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
}

impl Candidate {
    /// `package=version`, as `apt-get download` takes it.
    pub fn key(&self) -> String {
        format!("{}={}", self.package, self.version)
    }
}

/// apt with a private sources list, index directory and cache for one architecture.
pub struct Apt {
    dir: PathBuf,
    pub arch: Arch,
}

impl Apt {
    /// Prepares `dir` (sources list from the machine's archive URIs) and updates its
    /// indexes when they are older than a day.
    pub fn new(dir: &Path, arch: Arch) -> anyhow::Result<Self> {
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
        let apt = Self { dir, arch };
        apt.update_if_stale()?;
        Ok(apt)
    }

    /// `program` with the options that make it use only the private state, for `arch`.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let arch = self.arch.debian();
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
            "-o",
            &format!("APT::Architecture={arch}"),
            "-o",
            &format!("APT::Architectures={arch}"),
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
            // Offline, say: what is cached for the old indexes still serves.
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

    /// Names of the packages matching the regular expression `pattern`.
    pub fn search(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let found = cmd::output(
            self.command("apt-cache")
                .args(["search", "--names-only"])
                .arg(pattern),
        )?;
        Ok(found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Every version the indexes offer of each of `packages`.
    pub fn versions(&self, packages: &[String]) -> anyhow::Result<Vec<Candidate>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let shown = cmd::output(self.command("apt-cache").arg("show").args(packages))?;
        Ok(stanzas(&shown))
    }

    /// What installing `packages` on an empty system installs (apt's own resolution:
    /// candidate versions, no recommends), as `package=version`.
    pub fn closure(&self, packages: &[&str]) -> anyhow::Result<Vec<Candidate>> {
        let status = self.dir.join("empty-status");
        fs::write(&status, "").with_context(|| format!("failed to write {}", status.display()))?;
        let plan = cmd::output(
            self.command("apt-get")
                .arg("-o")
                .arg(format!("Dir::State::status={}", status.display()))
                .args([
                    "-o",
                    "Debug::NoLocking=1",
                    "-o",
                    "APT::Install-Recommends=false",
                ])
                .args(["--simulate", "install"])
                .args(packages),
        )?;
        Ok(installs(&plan))
    }

    /// `apt-get download` of `candidates` into `dir`; returns the `.deb`s.
    pub fn download(&self, candidates: &[Candidate], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        if is_root() {
            // apt downloads as `_apt`, which must be able to write here.
            cmd::status(Command::new("chown").arg("_apt").arg(dir))?;
        }
        let keys: Vec<String> = candidates.iter().map(Candidate::key).collect();
        eprintln!("xtask: downloading {} ({})", keys.join(" "), self.arch);
        // Captured, so that a 404 is in the error and the caller can try something else.
        cmd::output(
            self.command("apt-get")
                .arg("download")
                .args(&keys)
                .current_dir(dir),
        )?;
        let debs: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("failed to read {}", dir.display()))?
            .map_while(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        if debs.len() != candidates.len() {
            bail!(
                "apt-get download left {} .deb files in {} for {} packages",
                debs.len(),
                dir.display(),
                candidates.len()
            );
        }
        Ok(debs)
    }

    /// Builds that answered 404 since the last index update.
    pub fn unavailable(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("unavailable"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Remembers that `candidate` answered 404 (until the next index update).
    pub fn mark_unavailable(&self, candidate: &Candidate) -> anyhow::Result<()> {
        let path = self.dir.join("unavailable");
        let mut known = fs::read_to_string(&path).unwrap_or_default();
        known.push_str(&candidate.key());
        known.push('\n');
        fs::write(&path, known).with_context(|| format!("failed to write {}", path.display()))
    }
}

/// Whether `root` holds a complete [`fetch_unpacked`] result.
pub fn is_unpacked(root: &Path) -> bool {
    root.join(UNPACKED).is_file()
}

/// Downloads `candidates` into a temporary directory and unpacks them all into `root`
/// (`dpkg-deb -x`), via a temporary sibling so that an interrupted run leaves nothing that
/// looks complete.
pub fn fetch_unpacked(apt: &Apt, candidates: &[Candidate], root: &Path) -> anyhow::Result<()> {
    let first = candidates.first().map_or("none", |c| c.package.as_str());
    let dir = std::env::temp_dir().join(format!(
        "listendrop-vm-{}-{}-{first}",
        std::process::id(),
        apt.arch
    ));
    let _ = fs::remove_dir_all(&dir);
    let result = apt
        .download(candidates, &dir)
        .and_then(|debs| unpack(&debs, root));
    let _ = fs::remove_dir_all(&dir);
    result
}

fn unpack(debs: &[PathBuf], root: &Path) -> anyhow::Result<()> {
    let mut partial = root.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)
        .with_context(|| format!("failed to create {}", partial.display()))?;
    for deb in debs {
        cmd::status(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    }
    fs::write(partial.join(UNPACKED), "")?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&partial, root)
        .with_context(|| format!("failed to move {} to {}", partial.display(), root.display()))
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

/// The `Inst NAME (VERSION ...)` lines of `apt-get --simulate install`.
fn installs(plan: &str) -> Vec<Candidate> {
    plan.lines()
        .filter_map(|l| {
            let (package, rest) = l.strip_prefix("Inst ")?.split_once(" (")?;
            let version = rest.split_whitespace().next()?;
            Some(Candidate {
                package: package.to_owned(),
                version: version.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{installs, stanzas, Candidate};

    #[test]
    fn what_a_simulated_install_installs() {
        let plan = "Reading package lists...\n\
            Inst libelf1 (0.188-2.1 Debian:12.15/oldstable [arm64])\n\
            Inst bpftool (7.1.0+6.1.192-3 Debian-Security:12/oldstable-security [arm64])\n\
            Conf libelf1 (0.188-2.1 Debian:12.15/oldstable [arm64])\n";
        assert_eq!(
            installs(plan),
            [
                Candidate {
                    package: "libelf1".into(),
                    version: "0.188-2.1".into()
                },
                Candidate {
                    package: "bpftool".into(),
                    version: "7.1.0+6.1.192-3".into()
                },
            ]
        );
    }

    #[test]
    fn package_versions_from_apt_cache_show() {
        let shown = "Package: iproute2\nVersion: 6.1.0-3\nArchitecture: arm64\n\n\
                     Package: libc6\nSource: glibc\nVersion: 2.36-9+deb12u13\n\n";
        assert_eq!(
            stanzas(shown),
            [
                Candidate {
                    package: "iproute2".into(),
                    version: "6.1.0-3".into()
                },
                Candidate {
                    package: "libc6".into(),
                    version: "2.36-9+deb12u13".into()
                },
            ]
        );
    }
}
