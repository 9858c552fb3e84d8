//! What a run of the matrix prints at its end: each failed guest's log tail, one line per
//! guest, retried boots and kernels that are not the newest of their series; and whether
//! the run passed.

use std::{fs, path::Path, time::Duration};

use anyhow::bail;

use super::{log_path, qemu, Boot, Guest, LOG_TAIL};
use crate::arch::Arch;

pub(super) fn passed(boot: &Boot) -> String {
    boot.passed
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// Prints the end of each failed guest's log, the summary table and the kernels that are
/// not the newest of their series; fails if any guest did.
pub(super) fn report(
    guests: &[Guest],
    results: &[anyhow::Result<Boot>],
    out: &Path,
    elapsed: Duration,
    jobs: u8,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (guest, result) in guests.iter().zip(results) {
        let name = guest.name();
        match result {
            Ok(boot) if boot.outcome.passed() => continue,
            Ok(boot) => {
                let log = log_path(out, &name);
                let text = fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines.len().saturating_sub(LOG_TAIL);
                // The kernel's first report says what started it; the tail may only
                // hold its consequences.
                if let Some(block) = first_block(&lines[..tail]) {
                    println!(
                        "\n==> {} (from the first kernel report, {} lines) <==",
                        log.display(),
                        block.len()
                    );
                    for line in block {
                        println!("{line}");
                    }
                }
                println!("\n==> {} (last {LOG_TAIL} lines) <==", log.display());
                for line in &lines[tail..] {
                    println!("{line}");
                }
                if let qemu::Outcome::KernelWarning(line) = &boot.outcome {
                    println!("==> {}: the kernel warned: {line}", guest.label());
                }
            }
            Err(e) => println!("\n==> {}: {e:#}", guest.label()),
        }
        failed.push(name);
    }
    summary_table(guests, results);
    for (guest, result) in guests.iter().zip(results) {
        if let Ok(Boot {
            retried_after: Some(retry),
            ..
        }) = result
        {
            println!(
                "RETRIED {}: booted twice: in the first boot {} ({}; log: {})",
                guest.label(),
                retry.why,
                retry.line,
                retry.log.display()
            );
            let text = fs::read_to_string(&retry.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if let Some(block) = first_block(&lines) {
                println!(
                    "==> {} (from its first kernel report) <==",
                    retry.log.display()
                );
                for line in block {
                    println!("{line}");
                }
            }
        }
    }
    let mut seen = Vec::new();
    for guest in guests {
        let k = guest.kernel;
        if !seen.contains(&&k.release) {
            seen.push(&k.release);
            if let Some(line) = fallback_line(k.arch, &k.series, &k.package, &k.version, &k.skipped)
            {
                println!("{line}");
            }
        }
    }
    let plural = if guests.len() == 1 { "" } else { "s" };
    println!(
        "{} guest{plural} in {:.0} s ({jobs} at a time)",
        guests.len(),
        elapsed.as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} guests failed: {} (logs in {})",
            failed.len(),
            guests.len(),
            failed.join(", "),
            out.display()
        );
    }
    Ok(())
}

/// The lines of `lines` from the first kernel warning, BUG or oops (at most [`LOG_TAIL`]
/// of them), with the test results printed just before it; `None` if there is none.
fn first_block<'a>(lines: &'a [&'a str]) -> Option<&'a [&'a str]> {
    let at = lines.iter().position(|l| qemu::kernel_warning(l))?;
    let from = lines[..at]
        .iter()
        .rposition(|l| l.starts_with("test "))
        .map_or(at, |t| t.max(at.saturating_sub(LOG_TAIL / 4)));
    Some(&lines[from..lines.len().min(at + LOG_TAIL)])
}

/// One line per guest: its kernel, outcome, tests passed of those expected, and time.
fn summary_table(guests: &[Guest], results: &[anyhow::Result<Boot>]) {
    println!(
        "\n{:<6} {:<6} {:<28} {:<22} {:<7} {:<34} {:>7} {:>7}",
        "arch", "series", "kernel", "package version", "run", "result", "tests", "seconds"
    );
    for (guest, result) in guests.iter().zip(results) {
        let (outcome, tests, seconds) = match result {
            Ok(boot) => (
                boot.outcome.to_string(),
                format!("{}/{}", passed(boot), guest.expected),
                format!("{:.1}", boot.elapsed.as_secs_f64()),
            ),
            Err(_) => ("ERROR (see above)".to_owned(), String::new(), String::new()),
        };
        let k = guest.kernel;
        println!(
            "{:<6} {:<6} {:<28} {:<22} {:<7} {:<34} {:>7} {:>7}",
            guest.expect.arch,
            k.series,
            k.release,
            k.version,
            guest.expect.run,
            outcome,
            tests,
            seconds
        );
    }
}

/// The summary's line for a kernel that is not the newest build of its series.
fn fallback_line(
    arch: Arch,
    series: &str,
    package: &str,
    version: &str,
    skipped: &[String],
) -> Option<String> {
    let newest = skipped.first()?;
    let builds = match skipped.len() {
        1 => "1 newer build".to_owned(),
        n => format!("{n} newer builds"),
    };
    Some(format!(
        "FALLBACK {arch} {series}: ran {package}={version}, not the newest build of the \
         series: {builds} could not be downloaded (newest: {newest})"
    ))
}

#[cfg(test)]
mod tests {
    use super::{fallback_line, first_block};

    #[test]
    fn the_first_warning_is_shown_from_the_last_test_result_before_it() {
        let warning = "[   56.407041] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!";
        let mut lines = vec!["boot"; 10];
        lines.push("test ack::one ... ok");
        lines.extend(["noise"; 3]);
        lines.push(warning);
        lines.extend(["RIP: 0010:tcp_v4_syn_recv_sock+0x0/0x440"; 100]);
        let block = first_block(&lines).unwrap();
        assert_eq!(block[0], "test ack::one ... ok");
        assert_eq!(block[4], warning);
        assert_eq!(block.len(), 4 + super::LOG_TAIL);
        assert_eq!(first_block(&lines[..14]), None);
    }
    use crate::arch::Arch;

    #[test]
    fn a_fallback_is_said_on_its_own_line() {
        assert_eq!(
            fallback_line(
                Arch::Amd64,
                "6.12",
                "linux-image-6.12.117+deb12-cloud-amd64",
                "6.12.117-1~deb12u1",
                &[]
            ),
            None
        );
        let skipped = [
            "linux-image-5.10.0-46-cloud-arm64=5.10.262-1: answered 404".to_owned(),
            "linux-image-5.10.0-45-cloud-arm64=5.10.261-1: answered 404 (earlier run)".to_owned(),
        ];
        let line = fallback_line(
            Arch::Arm64,
            "5.10",
            "linux-image-5.10.0-32-cloud-arm64",
            "5.10.223-1",
            &skipped,
        )
        .unwrap();
        assert_eq!(
            line,
            "FALLBACK arm64 5.10: ran linux-image-5.10.0-32-cloud-arm64=5.10.223-1, not the \
             newest build of the series: 2 newer builds could not be downloaded (newest: \
             linux-image-5.10.0-46-cloud-arm64=5.10.262-1: answered 404)"
        );
        assert!(!line.contains('\n'));
    }
}
