//! An independent witness of what the kernel hands to eBPF programs at ACK time: bpftrace's
//! own program on the classic `skb:kfree_skb` tracepoint, counting the
//! `TCP_LISTEN_OVERFLOW` frees per (network namespace, listening port).
//!
//! Why (docs/design.md, "Frees the kernel hands to no eBPF program"): on the 6.18.44 host
//! kernel, `skb:kfree_skb` now and then runs none of its eBPF programs (two listendrop
//! daemons' `tp_btf` programs and bpftrace's classic tracepoint program alike, with no
//! miss counted anywhere) for two consecutive frees, while its own trace event records
//! them and ListenOverflows counts them. A count that falls short of the kernel's is then
//! the kernel's doing only if this witness, which shares no code with listendrop, falls
//! short by exactly as much; otherwise the difference is listendrop's and the test fails.
//!
//! Started once per test process, before the first scenario that counts exactly
//! ([`crate::programs::counting_exactly`]), where bpftrace and the reason exist (not in
//! the kernel matrix's guests, whose kernels never showed the defect: there the
//! comparisons stay strict). It lives as long as the test process (parent-death signal).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Command, Stdio},
    sync::{Condvar, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

/// Frees counted per (namespace inode, port).
pub type Counts = BTreeMap<(u64, u16), u64>;

struct Witness {
    pid: i32,
    /// Maps printed so far: each print ends with `@ready: 1`.
    printed: Mutex<(u64, Counts)>,
    changed: Condvar,
    /// One query at a time.
    asking: Mutex<()>,
}

static WITNESS: OnceLock<Option<&'static Witness>> = OnceLock::new();

/// Starts the witness if this host can have one (idempotent; a few seconds the first
/// time). Must not be called while this thread holds a [`crate::programs::Moment`].
pub fn ensure() {
    WITNESS.get_or_init(|| {
        let _changing = crate::programs::changing_programs();
        let witness = start();
        match witness {
            Some(w) => eprintln!(
                "witness: bpftrace (pid {}) counts the TCP_LISTEN_OVERFLOW frees it is handed",
                w.pid
            ),
            None => eprintln!(
                "witness: none (no bpftrace, or no TCP_LISTEN_OVERFLOW reason on this kernel): \
                 counts are compared with the kernel's strictly"
            ),
        }
        witness
    });
}

/// The reason number of `TCP_LISTEN_OVERFLOW` in the tracepoint's format (6.15+).
fn listen_overflow_reason() -> Option<u32> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| std::fs::read_to_string(format!("{t}/events/skb/kfree_skb/format")).ok())?;
    let (number, _) = format.split_once(", \"TCP_LISTEN_OVERFLOW\" }")?;
    number.rsplit('{').next()?.trim().parse().ok()
}

fn start() -> Option<&'static Witness> {
    let reason = listen_overflow_reason()?;
    let program = crate::tools::which("bpftrace")?;
    let script = format!(
        "BEGIN {{ @ready = 1; printf(\"ready\\n\"); }}\n\
         tracepoint:skb:kfree_skb /args->reason == {reason}/ {{\n\
           $sk = (struct sock *)args->rx_sk;\n\
           @[$sk->__sk_common.skc_net.net->ns.inum, $sk->__sk_common.skc_num] = count();\n\
         }}\n"
    );
    // The test process's own network and mount namespaces (its main thread's: the calling
    // thread may have entered a test's), opened before the fork.
    let host = (
        std::fs::File::open("/proc/self/ns/net").ok()?,
        std::fs::File::open("/proc/self/ns/mnt").ok()?,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread that spawns bpftrace lives as long as the process: the parent-death
    // signal follows the spawning thread, not the process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(program);
        cmd.args(["-e", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let (net_fd, mnt_fd) = (host.0.as_raw_fd(), host.1.as_raw_fd());
        // SAFETY: runs in the forked (single-threaded) child before exec and only makes
        // three syscalls (async-signal safe) on descriptors the parent keeps open until
        // then.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(net_fd, libc::CLONE_NEWNET) != 0
                    || libc::setns(mnt_fd, libc::CLONE_NEWNS) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let Ok(mut child) = cmd.spawn() else {
            let _ = tx.send(None);
            return;
        };
        drop(host);
        let witness: &'static Witness = Box::leak(Box::new(Witness {
            pid: i32::try_from(child.id()).unwrap(),
            printed: Mutex::new((0, Counts::new())),
            changed: Condvar::new(),
            asking: Mutex::new(()),
        }));
        let mut sent = false;
        let mut pending = Counts::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            if line == "ready" && !sent {
                sent = true;
                let _ = tx.send(Some(witness));
            } else if line == "@ready: 1" {
                let mut printed = witness
                    .printed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                printed.0 += 1;
                printed.1 = std::mem::take(&mut pending);
                witness.changed.notify_all();
            } else if let Some((key, count)) = parse(&line) {
                pending.insert(key, count);
            }
        }
        if !sent {
            let _ = tx.send(None);
        }
        let _ = child.wait();
    });
    rx.recv_timeout(Duration::from_secs(60)).ok().flatten()
}

/// `@[4026532239, 43205]: 12` → ((4026532239, 43205), 12).
fn parse(line: &str) -> Option<((u64, u16), u64)> {
    let (key, count) = line.strip_prefix("@[")?.split_once("]: ")?;
    let (netns, port) = key.split_once(", ")?;
    Some((
        (netns.trim().parse().ok()?, port.trim().parse().ok()?),
        count.trim().parse().ok()?,
    ))
}

/// What the witness counted so far, or `None` without a witness.
pub fn counts() -> Option<Counts> {
    let witness = (*WITNESS.get()?)?;
    let _one = witness
        .asking
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut printed = witness
        .printed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let before = printed.0;
    // SIGUSR1: bpftrace prints every map.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(witness.pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while printed.0 == before {
        let left = deadline.checked_duration_since(Instant::now())?;
        printed = witness
            .changed
            .wait_timeout(printed, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    Some(printed.1.clone())
}

/// Runs of the witness's program the kernel skipped and counted (the classic tracepoint's
/// path skips a program while another tracing program, or a map syscall, is active on
/// that CPU: 6.7+ counts it), or `None` without a witness.
pub fn missed() -> Option<u64> {
    let witness = (*WITNESS.get()?)?;
    Some(
        crate::bpf::programs_of(u32::try_from(witness.pid).ok()?)
            .into_iter()
            .map(|id| crate::bpf::program(id).recursion_misses)
            .sum(),
    )
}

/// Why listendrop's `ours` falls short of the kernel's `kernel` TCP_LISTEN_OVERFLOW frees in
/// namespace `netns` (on `port` when given), when the witness shows the kernel handed
/// those frees to no eBPF program: it counted exactly `ours` too. `None` otherwise (no
/// shortfall, no witness, or a witness that saw more: the difference is listendrop's).
pub fn withheld(netns: u64, port: Option<u16>, ours: u64, kernel: u64) -> Option<String> {
    if ours >= kernel {
        return None;
    }
    explain(&counts()?, netns, port, ours, kernel)
}

/// [`withheld`] for the witness's `counts`.
fn explain(
    counts: &Counts,
    netns: u64,
    port: Option<u16>,
    ours: u64,
    kernel: u64,
) -> Option<String> {
    let seen: u64 = counts
        .iter()
        .filter(|((n, p), _)| *n == netns && port.is_none_or(|port| *p == port))
        .map(|(_, c)| c)
        .sum();
    (ours < kernel && seen == ours).then(|| {
        format!(
            "the kernel ran no eBPF program for {} of its {kernel} TCP_LISTEN_OVERFLOW frees \
             in netns {netns}{}: bpftrace's own classic-tracepoint program counted {seen}, as \
             listendrop did (a defect of this kernel: docs/design.md)",
            kernel - ours,
            port.map(|p| format!(" port {p}")).unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{explain, parse, Counts};

    #[test]
    fn only_a_shortfall_the_witness_shares_is_the_kernels() {
        let counts: Counts = [((7, 80), 10), ((7, 81), 5), ((8, 80), 12)].into();
        // The witness saw what listendrop saw, less than the kernel counted.
        assert!(explain(&counts, 7, Some(80), 10, 12).is_some());
        assert!(explain(&counts, 7, None, 15, 17).is_some());
        // The witness saw more than listendrop: the difference is listendrop's.
        assert!(explain(&counts, 8, Some(80), 10, 12).is_none());
        // No shortfall, or another listener's count.
        assert!(explain(&counts, 7, Some(80), 10, 10).is_none());
        assert!(explain(&counts, 7, Some(82), 10, 12).is_none());
    }

    #[test]
    fn map_lines_are_parsed_and_others_are_not() {
        assert_eq!(
            parse("@[4026532239, 43205]: 12"),
            Some(((4026532239, 43205), 12))
        );
        assert_eq!(parse("@ready: 1"), None);
        assert_eq!(parse("ready"), None);
        assert_eq!(parse("@[x, 1]: 2"), None);
    }
}
