//! `listendrop check`: what this kernel and this process allow, hook by hook and drop
//! class by drop class.

use std::{io::Write, path::Path};

use listendrop_common::Reason;

use crate::{cli::CheckArgs, layout, privileges, session, tracefs::Tracefs};

/// Prints the report; `Ok(true)` when listendrop can count drops here.
pub fn check(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    if !prerequisites(&mut out, args)? {
        writeln!(out, "\nlistendrop cannot load its programs here.")?;
        return Ok(false);
    }
    let probes = match session::open(&args.probes, None) {
        Ok(probes) => probes,
        Err(e) => {
            writeln!(out, "\nloading failed: {e:#}")?;
            return Ok(false);
        }
    };
    writeln!(out, "\nhooks")?;
    for hook in &probes.hooks {
        let detail = match &hook.status {
            Ok(()) => "attached".to_owned(),
            Err(why) => why.clone(),
        };
        writeln!(
            out,
            "  {} {:<28} {:<10} {detail}",
            mark(hook.status.is_ok()),
            hook.probe(),
            hook.kind.as_str()
        )?;
    }
    writeln!(out, "\ndrop classes")?;
    let coverage = probes.coverage();
    for (reason, covered) in &coverage {
        writeln!(
            out,
            "  {} {:<30} {}",
            mark(*covered),
            reason.as_str(),
            if *covered {
                "observable"
            } else {
                "not observable on this kernel"
            }
        )?;
    }
    let any = counts_drops(&coverage);
    writeln!(
        out,
        "\n{}",
        if any {
            "listendrop can count drops here."
        } else {
            "listendrop can load but no drop class is observable here."
        }
    )?;
    Ok(any)
}

/// Prints the kernel, BTF, tracefs and privileges lines; whether the programs can load.
fn prerequisites(out: &mut impl Write, args: &CheckArgs) -> std::io::Result<bool> {
    let (major, minor) = layout::kernel_version();
    writeln!(out, "kernel      {major}.{minor} ({})", release())?;
    let btf_ok = Path::new(&args.probes.btf).exists();
    writeln!(
        out,
        "btf         {} {}",
        mark(btf_ok),
        if btf_ok {
            args.probes.btf.display().to_string()
        } else {
            format!(
                "{} missing: needs CONFIG_DEBUG_INFO_BTF=y or --btf",
                args.probes.btf.display()
            )
        }
    )?;
    let tracefs = Tracefs::locate();
    writeln!(
        out,
        "tracefs     {} {}",
        mark(tracefs.is_ok()),
        tracefs.as_ref().map_or_else(String::as_str, |_| "mounted")
    )?;
    let privileges = privileges::check();
    writeln!(
        out,
        "privileges  {} {}",
        mark(privileges.is_ok()),
        privileges
            .as_ref()
            .err()
            .map_or("CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN)", String::as_str)
    )?;
    Ok(btf_ok && privileges.is_ok())
}

/// Whether some drop class is observable. SYN-ACK retransmits and overflow resets alone
/// (their tracepoints attach almost everywhere) do not make listendrop useful.
fn counts_drops(coverage: &[(Reason, bool)]) -> bool {
    coverage
        .iter()
        .any(|(reason, covered)| *covered && reason.is_drop())
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "[ok]"
    } else {
        "[--]"
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_drop_class_makes_check_pass() {
        let none = [
            (Reason::AckAcceptQueueFull, false),
            (Reason::SynackRetransmit, true),
            (Reason::OverflowReset, true),
        ];
        assert!(!counts_drops(&none));
        let ack = [
            (Reason::AckAcceptQueueFull, true),
            (Reason::SynackRetransmit, true),
        ];
        assert!(counts_drops(&ack));
    }
}
