//! Boots one kernel under QEMU (TCG only, never KVM), records its serial console, and
//! decides the result from the marker line `/init` prints, with a hard wall-clock limit.

use std::{
    fmt,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{kernels::Kernel, MARKER};
use crate::cmd;

/// How long a VM may take to power off after printing its marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// How one VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The tests passed.
    Pass,
    /// The test binary exited with this code.
    Fail(String),
    /// The kernel panicked.
    Panic,
    /// QEMU exited without printing a marker.
    NoMarker,
    /// The VM ran past the time limit and was killed.
    Timeout,
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
            Self::NoMarker => write!(f, "FAIL (no result marker)"),
            Self::Timeout => write!(f, "FAIL (timeout)"),
        }
    }
}

/// One VM run.
pub struct Boot {
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// What to boot and how.
pub struct BootOptions<'a> {
    pub initrd: &'a Path,
    /// Serial console transcript.
    pub log: &'a Path,
    pub timeout: Duration,
    /// Also print the console, each line prefixed with the kernel series.
    pub verbose: bool,
}

/// Boots `kernel` with `opts.initrd` and waits for its result.
pub fn boot(kernel: &Kernel, opts: &BootOptions) -> anyhow::Result<Boot> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(opts.initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
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
    let prefix = format!("[{}] ", kernel.series);
    let mut watch = Watch::new(start + opts.timeout);
    let timed_out = loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if opts.verbose {
                    eprintln!("{prefix}{line}");
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
        outcome: watch.outcome(timed_out),
        elapsed: start.elapsed(),
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

/// What the console said so far, and until when to wait.
struct Watch {
    deadline: Instant,
    marker: Option<String>,
    panicked: bool,
}

impl Watch {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            marker: None,
            panicked: false,
        }
    }

    fn see(&mut self, line: &str) {
        if line.contains("Kernel panic") {
            self.panicked = true;
        }
        if let Some(i) = line.find(MARKER) {
            if self.marker.is_none() {
                self.marker = Some(line[i + MARKER.len()..].trim().to_owned());
                // The VM powers off next; do not wait the whole limit if it hangs.
                self.deadline = self.deadline.min(Instant::now() + POWEROFF_GRACE);
            }
        }
    }

    /// The verdict; `timed_out`: the VM was killed at the deadline.
    fn outcome(&self, timed_out: bool) -> Outcome {
        if self.panicked {
            return Outcome::Panic;
        }
        match self.marker.as_deref() {
            Some("PASS") => Outcome::Pass,
            Some(other) => Outcome::Fail(
                other
                    .strip_prefix("FAIL")
                    .unwrap_or(other)
                    .trim()
                    .to_owned(),
            ),
            None if timed_out => Outcome::Timeout,
            None => Outcome::NoMarker,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Outcome, Watch, MARKER};

    fn outcome(lines: &[&str], timed_out: bool) -> Outcome {
        let mut watch = Watch::new(Instant::now() + Duration::from_secs(60));
        for line in lines {
            watch.see(line);
        }
        watch.outcome(timed_out)
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
        assert_eq!(outcome(&["boot", &pass], false), Outcome::Pass);
        assert_eq!(outcome(&[&fail], false), Outcome::Fail("exit=101".into()));
        assert_eq!(outcome(&["boot"], false), Outcome::NoMarker);
        assert_eq!(outcome(&["boot"], true), Outcome::Timeout);
        assert_eq!(
            outcome(&[&pass, "Kernel panic - not syncing: x"], false),
            Outcome::Panic
        );
    }
}
