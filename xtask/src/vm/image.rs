//! The VM's whole userspace, in two gzipped newc cpio archives that the kernel unpacks one
//! after the other: per architecture the root filesystem (busybox, the daemon and the
//! test binary, iproute2 and bpftool, with their shared libraries), and per guest its
//! `/init` (which runs the tests and prints their summary and one result marker) and the
//! kernel modules the tests need.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::{binaries::Binaries, kernels::Kernel, userland::Userland, MARKER, TESTS_MARKER};
use crate::{cmd, toolchain};

/// Dynamically linked tools the tests run (from Debian's packages of the guest's
/// architecture); they go to `/bin`.
const TOOLS: &[&str] = &["ip", "nstat", "ss", "bpftool"];

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

/// Symbols whose presence in /proc/kallsyms decides which hooks listendrop can use;
/// `/init` says which the kernel has, so that a log explains its hook choice.
const KALLSYMS: &[&str] = &[
    "__per_cpu_offset",
    "tcp_syn_flood_action",
    "inet_reqsk_alloc",
    "tcp_v4_send_synack",
    "tcp_v6_send_synack",
    "tcp_create_openreq_child",
    "tcp_conn_request",
    "tcp_v4_syn_recv_sock",
    "tcp_v6_syn_recv_sock",
];

/// What `/init` runs.
pub struct InitOptions<'a> {
    /// `KEY=VALUE` environment for the tests.
    pub env: &'a [(String, String)],
    /// Arguments for the test binary (e.g. a name filter).
    pub test_args: &'a [String],
    /// Seconds after which tests still running are a stall: the guest then prints what
    /// every CPU and task is doing (once), so that a hung run says why.
    pub stall_secs: u64,
}

/// Tests each guest runs alone, after the others (when its filter selects them): a
/// raw-socket flood through `tcp_v4_syn_recv_sock` while another test's listendrop
/// attached or detached its hooks there (`text_poke_bp` at the function's entry, or a
/// tracepoint's static key) has made TCG run a stale `int3` (`Oops: int3` at
/// `tcp_v4_syn_recv_sock+0x5`, amd64 6.12) and crawl for minutes (soft lockups, amd64
/// 5.10). The kernel's patching protocol is safe on a real CPU; the emulator's handling of
/// code another vCPU rewrites is not. Checked to exist before any guest boots.
pub const ALONE: &[&str] =
    &["flood::concurrent_scrapers_see_an_exact_monotonic_counter_under_a_flood"];

/// One architecture's root filesystem, packed; every guest of that architecture boots it
/// with an archive of its own after it.
pub struct Rootfs {
    archive: PathBuf,
}

impl Rootfs {
    /// Lays out a fresh root filesystem in `dir` and packs it into `dir.cpio.gz`.
    pub fn prepare(dir: &Path, bins: &Binaries, userland: &Userland) -> anyhow::Result<Self> {
        fresh_dir(dir)?;
        for sub in [
            "bin",
            "dev",
            "etc",
            "lib/modules",
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
        // where Debian's iproute2 keeps namespaces; the tests read `/run/netns`). `/init`
        // adds busybox's applets with `busybox --install` (the binary may not run here).
        for (link, target) in [
            ("sbin", "bin"),
            ("usr/bin", "../bin"),
            ("usr/sbin", "../bin"),
            ("var/run", "../run"),
            ("bin/sh", "busybox"),
        ] {
            symlink(target, dir.join(link))
                .with_context(|| format!("failed to link {link} -> {target}"))?;
        }
        copy(&userland.program("busybox")?, &dir.join("bin/busybox"))?;
        // The two binaries (static for musl, or linked with glibc where they are the
        // host's native build, which the tools' libc6 of the same Debian release serves),
        // then the tools, each with the shared libraries it needs.
        let mut programs = vec![
            (bins.daemon.clone(), "listendrop"),
            (bins.tests.clone(), "privileged"),
        ];
        for tool in TOOLS {
            programs.push((userland.program(tool)?, tool));
        }
        for (program, name) in programs {
            copy(&program, &dir.join("bin").join(name))?;
            for (file, guest) in userland.libraries(&program)? {
                let dest = dir.join(guest.strip_prefix("/").unwrap_or(&guest));
                if !dest.exists() {
                    copy(&file, &dest)?;
                }
            }
        }
        let mut archive = dir.as_os_str().to_owned();
        archive.push(".cpio.gz");
        let archive = PathBuf::from(archive);
        pack(dir, &archive)?;
        Ok(Self { archive })
    }

    /// Writes `dir/initrd.cpio.gz`: the root filesystem, then `dir/overlay` with
    /// `kernel`'s modules and `/init`.
    pub fn initrd(
        &self,
        kernel: &Kernel,
        init: &InitOptions,
        dir: &Path,
    ) -> anyhow::Result<PathBuf> {
        let overlay = dir.join("overlay");
        fresh_dir(&overlay)?;
        let modules = overlay.join(MODULE_DIR);
        mkdir(&modules)?;
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
                decompress_module(&found, &modules.join(format!("{n}-{name}")))?;
            }
        }
        let path = overlay.join("init");
        fs::write(&path, init_script(init))
            .with_context(|| format!("failed to write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to chmod {}", path.display()))?;
        let packed = dir.join("overlay.cpio.gz");
        pack(&overlay, &packed)?;
        // The kernel unpacks concatenated (compressed) archives in order.
        let initrd = dir.join("initrd.cpio.gz");
        let mut out = fs::File::create(&initrd)
            .with_context(|| format!("failed to create {}", initrd.display()))?;
        for part in [&self.archive, &packed] {
            let bytes =
                fs::read(part).with_context(|| format!("failed to read {}", part.display()))?;
            out.write_all(&bytes)
                .with_context(|| format!("failed to write {}", initrd.display()))?;
        }
        Ok(initrd)
    }
}

/// Packs the tree `dir` into `out` (gzipped newc cpio, files owned by root).
fn pack(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let list = out.with_extension("list");
    fs::write(&list, file_list(dir)?.join("\n") + "\n")
        .with_context(|| format!("failed to write {}", list.display()))?;
    let cpio = out.with_extension("");
    let file =
        |p: &Path| fs::File::create(p).with_context(|| format!("failed to create {}", p.display()));
    cmd::status(
        Command::new("cpio")
            .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
            .current_dir(dir)
            .stdin(fs::File::open(&list)?)
            .stdout(file(&cpio)?),
    )?;
    cmd::status(Command::new("gzip").arg("-c").arg(&cpio).stdout(file(out)?))?;
    let _ = fs::remove_file(&cpio);
    let _ = fs::remove_file(&list);
    Ok(())
}

/// Copies `src` to `dest`, creating its directory; keeps the mode (executables stay so).
fn copy(src: &Path, dest: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dest.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(dest);
    fs::copy(src, dest)
        .with_context(|| format!("failed to copy {} to {}", src.display(), dest.display()))?;
    Ok(())
}

/// The `/init` script: busybox's applets, mounts, modules, loopback, environment, the
/// kernel's relevant symbols, `listendrop check`, the tests (their summary line repeated
/// after a marker of its own), one result marker, power off. PID 1 must never exit (the
/// kernel would panic), so nothing here aborts.
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
    let symbols = KALLSYMS.join(" ");
    let stall = init.stall_secs;
    let skips: String = ALONE
        .iter()
        .map(|t| format!(" --skip {}", shell_quote(t)))
        .collect();
    let alone: String = ALONE
        .iter()
        .map(|t| shell_quote(t))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm-test` (xtask/src/vm/image.rs).
/bin/busybox --install -s /bin
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
{exports}echo "listendrop-vm: kernel $(uname -r) $(uname -m)"
echo "listendrop-vm: kallsyms: $(awk -v want="{symbols}" '
    BEGIN {{ n = split(want, w, " "); for (i = 1; i <= n; i++) wanted[w[i]] = 1 }}
    $3 in wanted {{ seen[$3] = 1 }}
    END {{ for (i = 1; i <= n; i++) printf "%s=%s ", w[i], (w[i] in seen) ? "yes" : "no" }}
' /proc/kallsyms)"
echo "listendrop-vm: LISTENDROP_EXPECT_HOOKS=$LISTENDROP_EXPECT_HOOKS"
echo "listendrop-vm: what listendrop attaches here"
/bin/listendrop check ${{LISTENDROP_PROBE_KIND:+--probe-kind $LISTENDROP_PROBE_KIND}}
echo "listendrop-vm: running the privileged tests"
# Into a file, shown as it grows: the summary is read back from a copy the kernel's console
# lines cannot interleave with (and no process the tests leave behind can hold it open).
: >/tmp/tests.out # exists before tail opens it (the redirection below happens in the child)
run_tests() {{
    /bin/privileged --test-threads=2{args}{skips} >>/tmp/tests.out 2>&1
    rc=$?
    for alone in {alone}; do # alone, if the filter selects it (xtask/src/vm/image.rs)
        if /bin/privileged --list{args} 2>/dev/null | grep -qxF "$alone: test"; then
            /bin/privileged --exact "$alone" >>/tmp/tests.out 2>&1 || rc=$?
        fi
    done
    return $rc
}}
run_tests &
tests=$!
tail -f /tmp/tests.out &
shown=$!
(
    sleep {stall}
    echo "listendrop-vm: STALL: the tests still run after {stall} s; what the kernel is doing:"
    dmesg -n 8
    cat /proc/loadavg /proc/softirqs /proc/net/softnet_stat
    grep -E '^ *(CPU|LOC|RES|CAL|TLB|IWI|NMI)' /proc/interrupts
    for t in /proc/[0-9]*/task/[0-9]*; do
        state=$(cut -d' ' -f3 $t/stat)
        [ "$state" = I ] && continue # idle kernel workers
        echo "listendrop-vm: task ${{t#/proc/}} $(cat $t/comm) $state"
        cat $t/stack
    done 2>/dev/null
    echo l >/proc/sysrq-trigger
) &
stall=$!
wait $tests
rc=$?
kill $stall
sleep 2 # busybox tail -f reads once a second
kill $shown
grep '^test result: ' /tmp/tests.out | while read -r line; do echo "{TESTS_MARKER} $line"; done
if [ "$rc" = 0 ]; then
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

/// Makes `dir` an empty directory.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    mkdir(dir)
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
            stall_secs: 360,
        });
        assert!(script.contains("export LISTENDROP_EXPECT_FULL_COVERAGE='1'\n"));
        assert!(script.contains("sleep 360\n"));
        assert!(script.contains(&format!(
            "/bin/privileged --test-threads=2 'sigterm' --skip '{}' >>/tmp/tests.out",
            super::ALONE[0]
        )));
        assert!(script.contains(&format!("for alone in '{}'; do", super::ALONE[0])));
        assert_eq!(script.matches("poweroff -f").count(), 1);
    }
}
