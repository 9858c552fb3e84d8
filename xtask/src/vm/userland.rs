//! The guests' tools (iproute2, bpftool, busybox) and C libraries (glibc, libgcc_s: the
//! host's native builds of the daemon and tests need them too) from Debian's packages of
//! the guest's architecture, unpacked with their dependencies into the cache. A program's
//! shared libraries, and the symbol versions it needs of them, are found with `readelf`
//! (the programs may be of another architecture than the host, where `ldd` cannot run
//! them).

use std::{
    collections::{btree_map::Entry, BTreeMap},
    fs,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use super::apt::{self, Apt};
use crate::{arch::Arch, cmd};

/// Debian packages whose programs and libraries the guests run.
const PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "busybox-static",
    "libc6",
    "libgcc-s1",
];

/// Where Debian packages put programs.
const PROGRAM_DIRS: &[&str] = &["bin", "sbin", "usr/bin", "usr/sbin"];

/// Symbolic links followed at most, like the kernel's limit.
const MAX_LINKS: usize = 40;

/// [`PACKAGES`] and their dependencies, unpacked in one tree.
pub struct Userland {
    root: PathBuf,
    arch: Arch,
}

impl Userland {
    /// The packages' current versions for `apt`'s architecture, unpacked under `cache`
    /// (reused while the versions stay the same).
    pub fn fetch(apt: &Apt, cache: &Path) -> anyhow::Result<Self> {
        let mut candidates = apt.closure(PACKAGES)?;
        candidates.sort_by(|a, b| a.package.cmp(&b.package));
        let keys: Vec<String> = candidates.iter().map(|c| c.key()).collect();
        let dir = cache.join(format!("userland-{}", apt.arch));
        let root = dir.join("root");
        let stamp = dir.join("packages");
        let wanted = keys.join("\n") + "\n";
        if !(apt::is_unpacked(&root) && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)) {
            apt::fetch_unpacked(apt, &candidates, &root)?;
            fs::write(&stamp, wanted)
                .with_context(|| format!("failed to write {}", stamp.display()))?;
        }
        Ok(Self {
            root,
            arch: apt.arch,
        })
    }

    /// The program `name` in the tree.
    pub fn program(&self, name: &str) -> anyhow::Result<PathBuf> {
        PROGRAM_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| self.root.join(p).symlink_metadata().is_ok())
            .map(|p| self.resolve(&p))
            .with_context(|| {
                format!(
                    "none of the packages {PACKAGES:?} ({}) has a program {name} in {}: add \
                     the Debian package that has it to PACKAGES in xtask/src/vm/userland.rs",
                    self.arch,
                    self.root.display()
                )
            })?
    }

    /// Shared libraries `program` needs, recursively, and its dynamic loader: pairs of
    /// (file in the tree, absolute path in the guest). Fails when a library in the tree
    /// lacks a symbol version a program needs (a host newer than the guests' Debian release
    /// built it), which the guest's loader would refuse before any test runs.
    pub fn libraries(&self, program: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut pending = vec![program.to_owned()];
        let mut seen: Vec<String> = Vec::new();
        let mut versions: Vec<(PathBuf, VersionNeed)> = Vec::new();
        while let Some(elf) = pending.pop() {
            let headers = cmd::output(
                Command::new("readelf")
                    .args(["-d", "-l", "-V", "-W"])
                    .arg(&elf),
            )?;
            versions.extend(
                version_needs(&headers)
                    .into_iter()
                    .map(|n| (elf.clone(), n)),
            );
            if let Some(loader) = interpreter(&headers) {
                if !found.iter().any(|(_, guest)| guest == Path::new(loader)) {
                    let file = self.resolve(Path::new(loader))?;
                    found.push((file, PathBuf::from(loader)));
                }
            }
            for soname in needed(&headers) {
                if seen.iter().any(|s| s == soname) {
                    continue;
                }
                seen.push(soname.to_owned());
                let guest = self.find_library(soname).with_context(|| {
                    format!(
                        "{} needs {soname}, which no package unpacked in {} ships: add the \
                         Debian package that has it to PACKAGES in xtask/src/vm/userland.rs",
                        elf.display(),
                        self.root.display()
                    )
                })?;
                let file = self.resolve(&guest)?;
                pending.push(file.clone());
                found.push((file, Path::new("/").join(guest)));
            }
        }
        let mut defined: BTreeMap<&Path, String> = BTreeMap::new();
        for (elf, need) in &versions {
            let Some((file, _)) = found
                .iter()
                .find(|(_, guest)| guest.file_name() == Some(need.file.as_ref()))
            else {
                continue; // a need names a NEEDED library, found above (or failed there)
            };
            let definitions = match defined.entry(file) {
                Entry::Occupied(read) => read.into_mut(),
                Entry::Vacant(unread) => unread.insert(cmd::output(
                    Command::new("readelf").args(["-V", "-W"]).arg(file),
                )?),
            };
            if !version_definitions(definitions).contains(&need.version.as_str()) {
                bail!(
                    "{} needs {} of {}, which the guests' {} (Debian's, of the release in \
                     xtask/src/vm/apt.rs) does not define: it was linked with a newer C \
                     library than the guests have; build on that Debian release or an older one",
                    elf.display(),
                    need.version,
                    need.file,
                    file.display()
                );
            }
        }
        Ok(found)
    }

    /// `soname` in the directories the guest's loader searches, relative to the root.
    fn find_library(&self, soname: &str) -> Option<PathBuf> {
        let multiarch = self.arch.multiarch();
        [
            format!("lib/{multiarch}"),
            format!("usr/lib/{multiarch}"),
            "lib".to_owned(),
            "usr/lib".to_owned(),
        ]
        .iter()
        .map(|d| Path::new(d).join(soname))
        .find(|p| self.root.join(p).symlink_metadata().is_ok())
    }

    /// The regular file `path` (absolute or relative, as seen from inside the tree) names,
    /// following symbolic links within the tree.
    fn resolve(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let mut current = normalize(path);
        for _ in 0..MAX_LINKS {
            let host = self.root.join(&current);
            let meta = host
                .symlink_metadata()
                .with_context(|| format!("{} is missing", host.display()))?;
            if !meta.file_type().is_symlink() {
                return Ok(host);
            }
            let target = fs::read_link(&host)
                .with_context(|| format!("failed to read the link {}", host.display()))?;
            current = if target.is_absolute() {
                normalize(&target)
            } else {
                normalize(&current.parent().unwrap_or(Path::new("")).join(target))
            };
        }
        bail!("too many symbolic links from {}", path.display())
    }
}

/// `path` relative to the tree's root, `.` and `..` resolved lexically (never above the
/// root, as the kernel resolves them in a chroot).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The `NEEDED` entries of `readelf -d` output.
fn needed(readelf: &str) -> Vec<&str> {
    readelf
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split_once("Shared library: [")?.1.split_once(']'))
        .map(|(soname, _)| soname)
        .collect()
}

/// A symbol version a program needs of a library (`readelf -V`'s version needs).
#[derive(Debug, PartialEq, Eq)]
struct VersionNeed {
    /// The library's soname.
    file: String,
    /// The version, e.g. `GLIBC_2.34`.
    version: String,
}

/// The version needs in `readelf -V` output: `File: <soname>` lines, each followed by the
/// `Name: <version>` lines of what is needed of it.
fn version_needs(readelf: &str) -> Vec<VersionNeed> {
    let Some((_, section)) = readelf.split_once("Version needs section") else {
        return Vec::new();
    };
    let mut file = None;
    let mut out = Vec::new();
    for line in section.lines() {
        if line.starts_with("Version ") {
            break; // the next section
        }
        if let Some((_, rest)) = line.split_once("File: ") {
            file = rest.split_whitespace().next();
        } else if let (Some(f), Some((_, rest))) = (file, line.split_once("Name: ")) {
            if let Some(version) = rest.split_whitespace().next() {
                out.push(VersionNeed {
                    file: f.to_owned(),
                    version: version.to_owned(),
                });
            }
        }
    }
    out
}

/// The versions a library defines (`readelf -V`'s version definitions: `Rev:` lines).
fn version_definitions(readelf: &str) -> Vec<&str> {
    let Some((_, section)) = readelf.split_once("Version definition section") else {
        return Vec::new();
    };
    section
        .lines()
        .take_while(|l| !l.starts_with("Version "))
        .filter(|l| l.contains("Rev: "))
        .filter_map(|l| l.split_once("Name: ")?.1.split_whitespace().next())
        .collect()
}

/// The program interpreter of `readelf -l` output.
fn interpreter(readelf: &str) -> Option<&str> {
    readelf
        .lines()
        .find_map(|l| {
            l.split_once("[Requesting program interpreter: ")?
                .1
                .split_once(']')
        })
        .map(|(path, _)| path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{interpreter, needed, normalize, version_definitions, version_needs, VersionNeed};

    const READELF: &str = "
Program Headers:
  Type           Offset   VirtAddr           PhysAddr           FileSiz  MemSiz   Flg Align
  INTERP         0x000238 0x0000000000000238 0x0000000000000238 0x00001b 0x00001b R   0x1
      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]

Dynamic section at offset 0x9ad58 contains 31 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libbpf.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x000000000000000e (SONAME)             Library soname: [libx.so.1]
";

    #[test]
    fn reads_needed_libraries_and_the_loader() {
        assert_eq!(needed(READELF), ["libbpf.so.1", "libc.so.6"]);
        assert_eq!(interpreter(READELF), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(interpreter("no program headers"), None);
    }

    #[test]
    fn reads_version_needs_and_definitions() {
        let program = "
Version symbols section '.gnu.version' contains 3 entries:
 Addr: 0x0000000000000ef0  Offset: 0x00000ef0  Link: 6 (.dynsym)
  000:   0 (*local*)       2 (GLIBC_2.34)

Version needs section '.gnu.version_r' contains 2 entries:
 Addr: 0x0000000000001718  Offset: 0x00001718  Link: 7 (.dynstr)
  000000: Version: 1  File: libgcc_s.so.1  Cnt: 1
  0x0010:   Name: GCC_3.0  Flags: none  Version: 4
  0x0020: Version: 1  File: libc.so.6  Cnt: 2
  0x0030:   Name: GLIBC_2.34  Flags: none  Version: 3
  0x0040:   Name: GLIBC_2.2.5  Flags: none  Version: 2
";
        let need = |file: &str, version: &str| VersionNeed {
            file: file.to_owned(),
            version: version.to_owned(),
        };
        assert_eq!(
            version_needs(program),
            [
                need("libgcc_s.so.1", "GCC_3.0"),
                need("libc.so.6", "GLIBC_2.34"),
                need("libc.so.6", "GLIBC_2.2.5"),
            ]
        );
        assert!(version_needs("no version information").is_empty());
        let library = "
Version definition section '.gnu.version_d' contains 3 entries:
 Addr: 0x0000000000023f80  Offset: 0x00023f80  Link: 7 (.dynstr)
  000000: Rev: 1  Flags: BASE  Index: 1  Cnt: 1  Name: libc.so.6
  0x001c: Rev: 1  Flags: none  Index: 2  Cnt: 1  Name: GLIBC_2.2.5
  0x0038: Rev: 1  Flags: none  Index: 3  Cnt: 2  Name: GLIBC_2.34
  0x0054: Parent 1: GLIBC_2.2.5

Version needs section '.gnu.version_r' contains 1 entry:
  000000: Version: 1  File: ld-linux-x86-64.so.2  Cnt: 1
  0x0010:   Name: GLIBC_2.35  Flags: none  Version: 4
";
        assert_eq!(
            version_definitions(library),
            ["libc.so.6", "GLIBC_2.2.5", "GLIBC_2.34"]
        );
    }

    #[test]
    fn normalizes_link_targets_inside_the_tree() {
        assert_eq!(
            normalize(Path::new("/lib/aarch64-linux-gnu/../ld.so")),
            Path::new("lib/ld.so")
        );
        assert_eq!(normalize(Path::new("../../etc/x")), Path::new("etc/x"));
    }
}
