//! Boots one kernel under QEMU (TCG only, never KVM), records its serial console, and
//! decides the result from the lines `/init` prints (the tests' summary, the marker) and
//! the kernel's own (panics, warnings, oopses), with a hard wall-clock limit.

use std::{
    fmt,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{kernels::Kernel, MARKER, TESTS_MARKER};
use crate::{arch::Arch, cmd};

/// How long a VM may take to power off after printing its marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// How one VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The tests passed, as many as expected.
    Pass,
    /// The test binary exited with this code.
    Fail(String),
    /// The kernel panicked.
    Panic,
    /// The kernel printed a warning, BUG or oops (this line).
    KernelWarning(String),
    /// The tests passed, but not as many as expected.
    Count { passed: usize, expected: usize },
    /// The tests passed but their summary line (how many) is missing.
    NoCount,
    /// QEMU exited without printing a marker.
    NoMarker,
    /// The VM ran past the time limit and was killed.
    Timeout,
    /// The kernel crashed (this line) before `/init` ran: the boot failed, not a test
    /// (seen once on 6.18 under TCG: an int3 oops in sched_clock_cpu at 1 s).
    BootCrash(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Self::Pass
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => write!(f, "PASS"),
            Self::Fail(exit) => write!(f, "FAIL ({exit})"),
            Self::Panic => write!(f, "FAIL (kernel panic)"),
            Self::KernelWarning(_) => write!(f, "FAIL (kernel warning)"),
            Self::Count { passed, expected } => {
                write!(f, "FAIL ({passed} passed, {expected} expected)")
            }
            Self::NoCount => write!(f, "FAIL (no test summary)"),
            Self::NoMarker => write!(f, "FAIL (no result marker)"),
            Self::Timeout => write!(f, "FAIL (timeout)"),
            Self::BootCrash(_) => write!(f, "FAIL (the kernel crashed while booting)"),
        }
    }
}

/// One VM run.
pub struct Boot {
    pub outcome: Outcome,
    /// Tests passed, from the guest's libtest summary.
    pub passed: Option<usize>,
    pub elapsed: Duration,
    /// Why an earlier boot of this guest was booted again, if one was.
    pub retried_after: Option<Retry>,
}

/// An earlier boot of a guest that failed in a way no test can cause or prevent, so xtask
/// booted the guest once more (a second such failure fails the run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// What went wrong, for the summary.
    pub why: &'static str,
    /// The kernel's line that said so.
    pub line: String,
    /// That boot's console log, kept beside the others.
    pub log: PathBuf,
}

impl Outcome {
    /// Why this outcome earns the guest a second boot: only a kernel that crashed before
    /// `/init` ran (listendrop never ran there). Every other warning, BUG, oops or stall
    /// fails the guest.
    pub fn retry_reason(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::BootCrash(line) => {
                Some(("the kernel crashed while booting, before any test", line))
            }
            _ => None,
        }
    }
}

/// What to boot and how.
pub struct BootOptions<'a> {
    pub initrd: &'a Path,
    /// Serial console transcript.
    pub log: &'a Path,
    pub timeout: Duration,
    /// Also print the console, each line prefixed with this.
    pub verbose: Option<&'a str>,
    /// How many tests must pass.
    pub expected: usize,
}

/// Packages that provide [`qemu`]'s programs.
pub const fn package(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86",
        Arch::Arm64 => "qemu-system-arm",
    }
}

/// QEMU for `arch`: TCG, 2 CPUs, 1 GiB, serial console on stdio, no network, no reboot.
/// The kernel command line has no `quiet`: warnings (`loglevel=5`: KERN_WARNING and
/// worse) reach the console, where [`Watch`] looks for them.
fn qemu(arch: Arch) -> Command {
    let (program, machine, console) = match arch {
        Arch::Amd64 => ("qemu-system-x86_64", &["-cpu", "max"][..], "ttyS0"),
        // Plain `-cpu max` emulates QARMA5 pointer authentication, which Debian's kernels
        // use: 4 times slower, and tests time out. The implementation-defined algorithm
        // is cheap to emulate.
        Arch::Arm64 => (
            "qemu-system-aarch64",
            &["-M", "virt", "-cpu", "max,pauth-impdef=on"][..],
            "ttyAMA0",
        ),
    };
    let mut qemu = Command::new(program);
    qemu.args(machine)
        .args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-append")
        .arg(format!("console={console} loglevel=5 panic=-1"));
    qemu
}

/// Boots `kernel` with `opts.initrd` and waits for its result.
pub fn boot(kernel: &Kernel, opts: &BootOptions) -> anyhow::Result<Boot> {
    let mut qemu = qemu(kernel.arch);
    qemu.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(opts.initrd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: booting {} {} ({})",
        kernel.package,
        kernel.version,
        cmd::show(&qemu)
    );
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("failed to run {}", cmd::show(&qemu)))?;
    let lines = read_lines(&mut child);
    let mut log = File::create(opts.log)
        .with_context(|| format!("failed to create {}", opts.log.display()))?;
    let mut watch = Watch::new(start + opts.timeout);
    let timed_out = loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if let Some(prefix) = opts.verbose {
                    eprintln!("[{prefix}] {line}");
                }
                watch.see(&line);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break false,
        }
        if Instant::now() > watch.deadline {
            break true;
        }
    };
    if timed_out {
        // Only our child, by its pid.
        let _ = child.kill();
    }
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for {}", cmd::show(&qemu)))?;
    for line in lines.try_iter() {
        writeln!(log, "{line}")?;
    }
    if timed_out {
        writeln!(
            log,
            "xtask: killed after {:.0} s",
            start.elapsed().as_secs_f64()
        )?;
    } else if !status.success() && watch.marker.is_none() {
        writeln!(log, "xtask: qemu exited with {status}")?;
    }
    Ok(Boot {
        outcome: watch.outcome(timed_out, opts.expected),
        passed: watch.passed,
        elapsed: start.elapsed(),
        retried_after: None,
    })
}

/// Console lines of `child`'s stdout and stderr, `\r` removed, until both close.
fn read_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as _),
        child.stderr.take().map(|s| Box::new(s) as _),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                if tx.send(printable(&String::from_utf8_lossy(&buf))).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    rx
}

/// `line` without terminal escape sequences (SeaBIOS clears the screen and turns off line
/// wrapping) and control characters, so that it can be printed and searched.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                // CSI: parameters and intermediates up to a final byte in '@'..='~'.
                chars.next();
                while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            }
            '\u{1b}' => {
                chars.next();
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The first line `/init` prints (image.rs): the kernel has booted.
pub const INIT_STARTED: &str = "listendrop-vm: kernel ";

/// What the console said so far, and until when to wait.
struct Watch {
    deadline: Instant,
    marker: Option<String>,
    panicked: bool,
    /// The first kernel warning, BUG or oops line.
    warning: Option<String>,
    /// Tests passed: the sum of the summaries `/init` repeats, one per run of the tests.
    passed: Option<usize>,
    /// Whether `/init` has started (its first line).
    init: bool,
}

impl Watch {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            marker: None,
            panicked: false,
            warning: None,
            passed: None,
            init: false,
        }
    }

    fn see(&mut self, line: &str) {
        if line.contains(INIT_STARTED) {
            self.init = true;
        }
        if line.contains("Kernel panic") {
            self.panicked = true;
        }
        if self.warning.is_none() && kernel_warning(line) {
            self.warning = Some(line.to_owned());
        }
        // One line per run of the test binary (image.rs: some tests run alone, after).
        if let Some(i) = line.find(TESTS_MARKER) {
            if let Some(n) = passed(&line[i + TESTS_MARKER.len()..]) {
                self.passed = Some(self.passed.unwrap_or(0) + n);
            }
        }
        if let Some(i) = line.find(MARKER) {
            if self.marker.is_none() {
                self.marker = Some(line[i + MARKER.len()..].trim().to_owned());
                // The VM powers off next; do not wait the whole limit if it hangs.
                self.deadline = self.deadline.min(Instant::now() + POWEROFF_GRACE);
            }
        }
    }

    /// The verdict; `timed_out`: the VM was killed at the deadline; `expected`: how many
    /// tests must pass. The kernel's own failures come first: they explain the others.
    fn outcome(&self, timed_out: bool, expected: usize) -> Outcome {
        if (self.panicked || self.warning.is_some()) && !self.init {
            return Outcome::BootCrash(
                self.warning
                    .clone()
                    .unwrap_or_else(|| "Kernel panic".to_owned()),
            );
        }
        if self.panicked {
            return Outcome::Panic;
        }
        if let Some(line) = &self.warning {
            return Outcome::KernelWarning(line.clone());
        }
        match (self.marker.as_deref(), self.passed) {
            (Some("PASS"), Some(passed)) if passed == expected => Outcome::Pass,
            (Some("PASS"), Some(passed)) => Outcome::Count { passed, expected },
            (Some("PASS"), None) => Outcome::NoCount,
            (Some(other), _) => Outcome::Fail(
                other
                    .strip_prefix("FAIL")
                    .unwrap_or(other)
                    .trim()
                    .to_owned(),
            ),
            (None, _) if timed_out => Outcome::Timeout,
            (None, _) => Outcome::NoMarker,
        }
    }
}

/// Whether `line` holds a kernel message (printk's `[ seconds.micros]` prefix, anywhere:
/// the console interleaves the kernel's lines with the tests' output) that reports a
/// kernel bug: a `WARNING:` (WARN_ON, lockdep, RCU), a `BUG:`, a `kernel BUG at` or an
/// oops. The tests' own output has no such prefix.
pub(super) fn kernel_warning(line: &str) -> bool {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some((stamp, message)) = rest.split_once(']') else {
            return false;
        };
        let is_stamp = stamp.trim_start().split_once('.').is_some_and(|(s, us)| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && us.len() == 6
                && us.bytes().all(|b| b.is_ascii_digit())
        });
        if is_stamp
            && ["WARNING:", "BUG:", "kernel BUG at", "Oops"]
                .iter()
                .any(|k| message.contains(k))
        {
            return true;
        }
    }
    false
}

/// `N` of libtest's summary, `test result: ok. N passed; 0 failed; ...`.
fn passed(summary: &str) -> Option<usize> {
    let counts = summary.split_once("test result: ")?.1.split_once(". ")?.1;
    counts
        .split(';')
        .find_map(|c| c.trim().strip_suffix(" passed"))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{kernel_warning, passed, Outcome, Watch, MARKER, TESTS_MARKER};

    fn outcome(lines: &[&str], timed_out: bool) -> Outcome {
        let mut watch = Watch::new(Instant::now() + Duration::from_secs(60));
        for line in lines {
            watch.see(line);
        }
        watch.outcome(timed_out, 21)
    }

    #[test]
    fn strips_escapes() {
        assert_eq!(
            super::printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS\r\n"),
            "SeaBIOS"
        );
        assert_eq!(super::printable("a\tb [ 1.0] x\n"), "a\tb [ 1.0] x");
    }

    #[test]
    fn verdicts() {
        let pass = format!("{MARKER} PASS");
        let fail = format!("{MARKER} FAIL exit=101");
        let summary = |n: usize| {
            format!("{TESTS_MARKER} test result: ok. {n} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 96.91s")
        };
        let (ok, short) = (summary(21), summary(20));
        assert_eq!(outcome(&["boot", &ok, &pass], false), Outcome::Pass);
        // The tests run alone after the others add theirs.
        let (most, alone) = (summary(20), summary(1));
        assert_eq!(outcome(&[&most, &alone, &pass], false), Outcome::Pass);
        assert_eq!(
            outcome(&[&short, &pass], false),
            Outcome::Count {
                passed: 20,
                expected: 21
            }
        );
        assert_eq!(outcome(&[&pass], false), Outcome::NoCount);
        assert_eq!(outcome(&[&fail], false), Outcome::Fail("exit=101".into()));
        assert_eq!(outcome(&["boot"], false), Outcome::NoMarker);
        assert_eq!(outcome(&["boot"], true), Outcome::Timeout);
        let init = "listendrop-vm: kernel 6.18.15+deb13-cloud-amd64 x86_64";
        assert_eq!(
            outcome(&[init, &ok, &pass, "Kernel panic - not syncing: x"], false),
            Outcome::Panic
        );
        let warn = "[   42.123456] WARNING: CPU: 1 PID: 77 at kernel/bpf/x.c:1 f+0x1/0x2";
        assert_eq!(
            outcome(
                &[
                    init,
                    warn,
                    "[   42.123457] Modules linked in: veth",
                    &ok,
                    &pass
                ],
                false
            ),
            Outcome::KernelWarning(warn.into())
        );
        // Before /init: the boot failed.
        let oops = "[    1.114748] Oops: int3: 0000 [#1] SMP NOPTI";
        assert_eq!(
            outcome(
                &[oops, "[    1.117197] Kernel panic - not syncing: x"],
                false
            ),
            Outcome::BootCrash(oops.into())
        );
    }

    #[test]
    fn only_a_crashed_boot_is_booted_again() {
        let oops = "[    1.114748] Oops: int3: 0000 [#1] SMP NOPTI";
        assert!(Outcome::BootCrash(oops.into()).retry_reason().is_some());
        for line in [
            oops,
            "[   56.407041] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [t:365]",
            "[   42.123456] WARNING: CPU: 1 PID: 77 at kernel/bpf/x.c:1 f+0x1/0x2",
        ] {
            assert_eq!(Outcome::KernelWarning(line.into()).retry_reason(), None);
        }
        for outcome in [
            Outcome::Timeout,
            Outcome::Panic,
            Outcome::Fail("exit=101".into()),
            Outcome::NoMarker,
        ] {
            assert_eq!(outcome.retry_reason(), None, "{outcome}");
        }
    }

    #[test]
    fn passed_tests_from_libtest_summary() {
        assert_eq!(
            passed("test result: ok. 21 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 96.91s"),
            Some(21)
        );
        assert_eq!(
            passed(
                "test result: FAILED. 12 passed; 9 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some(12)
        );
        assert_eq!(
            passed(" test result: ok. 0 passed; 0 failed; 0 ignored"),
            Some(0)
        );
        assert_eq!(passed(""), None);
        assert_eq!(passed("test result: ok. many passed"), None);
    }

    #[test]
    fn kernel_warnings_but_not_test_output() {
        for line in [
            "[   12.345678] WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 x+0x0/0x10",
            "[    3.000001] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[    3.000001] kernel BUG at mm/slub.c:435!",
            "[    3.000002] Oops: 0002 [#1] PREEMPT SMP NOPTI",
            "[    3.000002] Internal error: Oops: 0000000096000004 [#1] SMP",
            "test ack::overflow ... [  100.000000] WARNING: suspicious RCU usage",
            "[12345.123456] WARNING: possible circular locking dependency detected",
        ] {
            assert!(kernel_warning(line), "{line}");
        }
        for line in [
            "[   12.345678] veth: loaded",
            "WARNING: test output without a kernel stamp",
            "thread 'x' panicked: BUG: something [#1]",
            "2026-12-02T02:57:00Z WARN listendrop::diagnosis: listener [::]:80 dropping",
            "[1.5] WARNING: not a printk stamp",
            "[",
        ] {
            assert!(!kernel_warning(line), "{line}");
        }
    }
}
