//! The guests' tools (iproute2, bpftool, busybox) from Debian's packages of the guest's
//! architecture, unpacked with their dependencies into the cache. Their shared libraries
//! are found with `readelf` (the programs may be of another architecture than the host,
//! where `ldd` cannot run them).

use std::{
    fs,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use super::apt::{self, Apt};
use crate::{arch::Arch, cmd};

/// Debian packages whose programs the guests run.
const PACKAGES: &[&str] = &["iproute2", "bpftool", "busybox-static"];

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
    /// (file in the tree, absolute path in the guest).
    pub fn libraries(&self, program: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut pending = vec![program.to_owned()];
        let mut seen: Vec<String> = Vec::new();
        while let Some(elf) = pending.pop() {
            let headers = cmd::output(Command::new("readelf").args(["-d", "-l", "-W"]).arg(&elf))?;
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

    use super::{interpreter, needed, normalize};

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
    fn normalizes_link_targets_inside_the_tree() {
        assert_eq!(
            normalize(Path::new("/lib/aarch64-linux-gnu/../ld.so")),
            Path::new("lib/ld.so")
        );
        assert_eq!(normalize(Path::new("../../etc/x")), Path::new("etc/x"));
    }
}
