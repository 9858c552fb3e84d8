//! `cargo xtask test`: everything CI runs.

use std::process::Command;

use anyhow::bail;

use crate::{arch::Arch, cmd, toolchain};

pub fn test(vm: bool) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the privileged tests load eBPF programs and create network namespaces: run \
             `sudo -E cargo xtask test` (plain `cargo test` runs the unprivileged ones)"
        );
    }
    let venv_bin = toolchain::ensure_all()?;
    cmd::ensure_tracefs()?;
    cmd::status(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    cmd::status(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--exclude",
        "listendrop-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The test support as the privileged tests build it alone (the guests' build):
    // without the CRI client that only the container tests enable.
    cmd::status(Command::new("cargo").args([
        "clippy",
        "--package",
        "listendrop-testsupport",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // LISTENDROP_REQUIRE_PRIVILEGED turns a privileged test's "skipped" into a failure.
    // The deploy tests find kubernetes-validate and python's yaml/jsonschema first on PATH.
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut tests = Command::new("cargo");
    tests
        .args(["test", "--workspace", "--exclude", "listendrop-ebpf"])
        .env("LISTENDROP_REQUIRE_PRIVILEGED", "1")
        .env("PATH", path);
    match host_hooks() {
        Some(hooks) => {
            tests.env("LISTENDROP_EXPECT_HOOKS", hooks);
        }
        None => eprintln!(
            "xtask: this host has kprobes or dynamic ftrace: the hook kinds are asserted in \
             the kernel matrix only"
        ),
    }
    cmd::status(&mut tests)?;
    // The .deb and `cargo xtask install` must install the same files, for every
    // architecture.
    crate::package::check(&Arch::ALL)?;
    if vm {
        // Every run of the matrix (xtask/src/vm/matrix.rs), both architectures.
        cmd::status(Command::new("cargo").args(["xtask", "vm-test"]))?;
    } else {
        eprintln!("xtask: --no-vm: the kernel matrix was skipped (CI always runs it)");
    }
    Ok(())
}

/// The hook kinds listendrop must attach on this host, when the kernel's facts decide them
/// alone: without kprobes (no `kprobe_events`) and without dynamic ftrace (no function to
/// trace, so no fentry), only tracepoints are left, and on 6.15+ (the freed ACK's drop
/// reason) the BTF kind of both is the best one. `None` on other hosts.
fn host_hooks() -> Option<String> {
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    let kprobes = tracing.join("kprobe_events").exists();
    let ftrace = std::fs::read_to_string(tracing.join("available_filter_functions"))
        .is_ok_and(|f| !f.trim().is_empty());
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?);
    (!kprobes && !ftrace && version >= (6, 15)).then(|| {
        "tcp_conn_request=none,tcp_v4_syn_recv_sock=none,tcp_v6_syn_recv_sock=none,\
         skb:kfree_skb=tp_btf,tcp:tcp_retransmit_synack=tp_btf"
            .to_owned()
    })
}
