//! The VM's whole userspace: busybox, the two static binaries, iproute2 and bpftool with
//! their shared libraries, the kernel modules the tests need, and an `/init` that runs the tests and
//! prints one result marker. Packed as a gzipped newc cpio archive, one per kernel.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::{binaries::Binaries, kernels::Kernel, MARKER};
use crate::{cmd, toolchain};

/// Dynamically linked host tools the tests run, with where they go in the VM.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "bin/ip"),
    ("nstat", "bin/nstat"),
    ("ss", "bin/ss"),
    ("bpftool", "bin/bpftool"),
];

/// The kernel modules the tests need, in load order (each after its dependencies), as
/// paths under the kernel's module directory without the compression suffix: veth for the
/// SYN-flood scenarios, inet_diag and tcp_diag for sock_diag (ss and the inventory). On a
/// real host the kernel loads these on demand through modprobe; the VM has none.
const MODULES: &[&str] = &[
    "kernel/drivers/net/veth.ko",
    "kernel/net/ipv4/inet_diag.ko",
    "kernel/net/ipv4/tcp_diag.ko",
];

/// Where the modules go in the VM, uncompressed for busybox `insmod`.
const MODULE_DIR: &str = "lib/modules";

/// What `/init` runs.
pub struct InitOptions<'a> {
    /// Extra `KEY=VALUE` environment for the tests.
    pub env: &'a [(String, String)],
    /// Arguments for the test binary (e.g. a name filter).
    pub test_args: &'a [String],
}

/// An unpacked root filesystem under `dir`, shared by every kernel but for its modules.
pub struct Rootfs {
    dir: PathBuf,
}

impl Rootfs {
    /// Lays out a fresh root filesystem in `dir`.
    pub fn prepare(dir: &Path, bins: &Binaries, init: &InitOptions) -> anyhow::Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir)
                .with_context(|| format!("failed to remove {}", dir.display()))?;
        }
        for sub in [
            "bin",
            "dev",
            "etc",
            "lib/modules",
            "lib64",
            "proc",
            "root",
            "run",
            "sys",
            "tmp",
            "usr",
            "var",
        ] {
            mkdir(&dir.join(sub))?;
        }
        // One directory of executables, wherever a program looks (`/var/run/netns` is
        // where Debian's iproute2 keeps namespaces; the tests read `/run/netns`).
        for (link, target) in [
            ("sbin", "bin"),
            ("usr/bin", "../bin"),
            ("usr/sbin", "../bin"),
            ("var/run", "../run"),
        ] {
            symlink(target, dir.join(link))
                .with_context(|| format!("failed to link {link} -> {target}"))?;
        }
        let rootfs = Self {
            dir: dir.to_owned(),
        };
        rootfs.copy(&bins.daemon, "bin/listendrop")?;
        rootfs.copy(&bins.tests, "bin/privileged")?;
        for (tool, dest) in TOOLS {
            rootfs.copy_with_libraries(&find_program(tool)?, dest)?;
        }
        rootfs.install_busybox()?;
        rootfs.write_executable("init", &init_script(init))?;
        Ok(rootfs)
    }

    /// Packs the root filesystem with `kernel`'s modules into `out` (gzipped newc cpio).
    pub fn pack(&self, kernel: &Kernel, out: &Path) -> anyhow::Result<()> {
        let dir = self.dir.join(MODULE_DIR);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        for (n, module) in MODULES.iter().enumerate() {
            let found = kernel
                .modules
                .as_deref()
                .and_then(|m| find_module(m, module));
            if let Some(found) = found {
                let name = Path::new(module)
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy();
                // The number keeps the load order in the VM's `ls`.
                decompress_module(&found, &dir.join(format!("{n}-{name}")))?;
            }
        }
        let list = out.with_extension("list");
        fs::write(&list, file_list(&self.dir)?.join("\n") + "\n")
            .with_context(|| format!("failed to write {}", list.display()))?;
        let cpio = out.with_extension("");
        let file = |p: &Path| {
            fs::File::create(p).with_context(|| format!("failed to create {}", p.display()))
        };
        cmd::status(
            Command::new("cpio")
                .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
                .current_dir(&self.dir)
                .stdin(fs::File::open(&list)?)
                .stdout(file(&cpio)?),
        )?;
        cmd::status(Command::new("gzip").arg("-c").arg(&cpio).stdout(file(out)?))?;
        let _ = fs::remove_file(&cpio);
        let _ = fs::remove_file(&list);
        Ok(())
    }

    /// Copies `src` to `dest` (relative to the root), keeping it executable.
    fn copy(&self, src: &Path, dest: &str) -> anyhow::Result<()> {
        let dest = self.dir.join(dest);
        if let Some(parent) = dest.parent() {
            mkdir(parent)?;
        }
        let _ = fs::remove_file(&dest);
        fs::copy(src, &dest)
            .with_context(|| format!("failed to copy {} to {}", src.display(), dest.display()))?;
        Ok(())
    }

    /// Copies a dynamically linked program and every library `ldd` resolves for it
    /// (the loader included) to the same paths in the root.
    fn copy_with_libraries(&self, program: &Path, dest: &str) -> anyhow::Result<()> {
        self.copy(program, dest)?;
        for lib in shared_libraries(program)? {
            let relative = lib
                .strip_prefix("/")
                .unwrap_or(&lib)
                .to_string_lossy()
                .into_owned();
            if !self.dir.join(&relative).exists() {
                self.copy(&lib, &relative)?;
            }
        }
        Ok(())
    }

    /// Static busybox and one `bin/` link per applet that no real tool already provides.
    fn install_busybox(&self) -> anyhow::Result<()> {
        let busybox = find_program("busybox")?;
        self.copy(&busybox, "bin/busybox")?;
        let applets = cmd::output(Command::new(&busybox).arg("--list"))?;
        for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
            let link = self.dir.join("bin").join(applet);
            if link.symlink_metadata().is_err() {
                symlink("busybox", &link)
                    .with_context(|| format!("failed to link {}", link.display()))?;
            }
        }
        Ok(())
    }

    fn write_executable(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to chmod {}", path.display()))
    }
}

/// The `/init` script: mounts, modules, loopback, environment, the tests, one marker line,
/// power off. PID 1 must never exit (the kernel would panic), so nothing here aborts.
fn init_script(init: &InitOptions) -> String {
    let exports: String = init
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let args: String = init
        .test_args
        .iter()
        .map(|a| format!(" {}", shell_quote(a)))
        .collect();
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm-test` (xtask/src/vm/initramfs.rs).
export PATH=/bin HOME=/root
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
try() {{ "$@" || echo "listendrop-vm: '$*' failed"; }}
try mount -t proc proc /proc
try mount -t sysfs sysfs /sys
try mount -t tmpfs tmpfs /run
try mount -t tmpfs tmpfs /tmp
try mkdir -p /run/netns
try mount -t tracefs tracefs /sys/kernel/tracing
try mount -t bpf bpf /sys/fs/bpf
for module in /{MODULE_DIR}/*.ko; do [ -f "$module" ] && try insmod "$module"; done
try ip link set lo up
export LISTENDROP_BIN=/bin/listendrop LISTENDROP_REQUIRE_PRIVILEGED=1 LISTENDROP_VM=1 RUST_BACKTRACE=1
{exports}echo "listendrop-vm: kernel $(uname -r): what listendrop attaches here"
/bin/listendrop check ${{LISTENDROP_PROBE_KIND:+--probe-kind $LISTENDROP_PROBE_KIND}}
echo "listendrop-vm: running the privileged tests"
/bin/privileged --test-threads=2{args}
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "{MARKER} PASS"
else
    echo "{MARKER} FAIL exit=$rc"
fi
poweroff -f
while :; do sleep 60; done
"#
    )
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Paths under `root`, relative (`.`-prefixed), parents before children, for cpio.
fn file_list(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("failed to read {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push(format!("./{}", relative.display()));
            if path.symlink_metadata()?.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(out)
}

/// Libraries `ldd` resolves for `program`, and the dynamic loader.
fn shared_libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(program))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// `name` on PATH or in the system directories (root's PATH may lack `sbin`).
fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed (not on PATH nor in /usr/sbin)"))
}

/// `module[.xz|.zst]` under a kernel's module directory.
fn find_module(modules: &Path, module: &str) -> Option<PathBuf> {
    ["", ".xz", ".zst"]
        .iter()
        .map(|ext| modules.join(format!("{module}{ext}")))
        .find(|p| p.is_file())
}

/// Copies a module to `dest`, decompressing `.xz`/`.zst` (busybox insmod reads plain ELF).
fn decompress_module(module: &Path, dest: &Path) -> anyhow::Result<()> {
    let name = module.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        toolchain::ensure_packages(&["zstd"])?;
        "zstd"
    } else {
        fs::copy(module, dest).with_context(|| format!("failed to copy {}", module.display()))?;
        return Ok(());
    };
    let out =
        fs::File::create(dest).with_context(|| format!("failed to create {}", dest.display()))?;
    cmd::status(Command::new(tool).arg("-dc").arg(module).stdout(out))
}

fn mkdir(path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(path).with_context(|| format!("failed to create {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{init_script, shell_quote, InitOptions};

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn init_exports_env_and_passes_test_args() {
        let env = [("LISTENDROP_EXPECT_FULL_COVERAGE".to_owned(), "1".to_owned())];
        let args = ["sigterm".to_owned()];
        let script = init_script(&InitOptions {
            env: &env,
            test_args: &args,
        });
        assert!(script.contains("export LISTENDROP_EXPECT_FULL_COVERAGE='1'\n"));
        assert!(script.contains("/bin/privileged --test-threads=2 'sigterm'\n"));
        assert_eq!(script.matches("poweroff -f").count(), 1);
    }
}
