//! The programs behind the attached hooks, with what reads their statistics at scrape
//! time ([`info`](super::info)): misses of every kind the kernel counts, and run time and
//! count while `kernel.bpf_stats_enabled=1`.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use super::info::{self, ProgramCounts};

/// One attached link, as ids: which program it runs and, for a kprobe, the link (whose
/// missed hits the kernel counts, 6.7+).
#[derive(Clone, Copy, Debug)]
pub struct LinkIds {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// The program's id.
    pub program_id: u32,
    /// The link's id, for a kprobe or kretprobe link (a BPF link: 5.15+).
    pub kprobe_link_id: Option<u32>,
}

/// Our programs, opened by id.
#[derive(Debug, Default)]
pub struct Programs {
    entries: BTreeMap<&'static str, Entry>,
    /// Whether kprobe links report their misses (6.7+).
    kprobe_missed: bool,
}

#[derive(Debug)]
struct Entry {
    program: OwnedFd,
    kprobe_links: Vec<OwnedFd>,
}

/// One program's statistics now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Its name.
    pub program: &'static str,
    /// Runs and run time (0 unless stats are enabled).
    pub runs: u64,
    /// Nanoseconds.
    pub run_ns: u64,
    /// Runs skipped plus kprobe hits missed; `None` where the kernel cannot say (before
    /// 5.12 for the former, 6.7 for kprobes).
    pub missed: Option<u64>,
}

impl Programs {
    /// Opens the programs (and kprobe links) of `links`. Opening by id needs
    /// CAP_SYS_ADMIN: without it the statistics are not exported, and the log says so.
    pub fn open(links: &[LinkIds], kprobe_missed: bool) -> Self {
        let mut entries: BTreeMap<&'static str, Entry> = BTreeMap::new();
        let mut failure = None;
        for link in links {
            if !entries.contains_key(link.program) {
                match info::program_fd(link.program_id) {
                    Ok(program) => {
                        entries.insert(
                            link.program,
                            Entry {
                                program,
                                kprobe_links: Vec::new(),
                            },
                        );
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        continue;
                    }
                }
            }
            if let (Some(id), Some(entry)) = (link.kprobe_link_id, entries.get_mut(link.program)) {
                match info::link_fd(id) {
                    Ok(fd) => entry.kprobe_links.push(fd),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            tracing::warn!(
                "cannot open the programs by id to export their misses and run time ({e}): \
                 that needs CAP_SYS_ADMIN (the systemd unit has it)"
            );
        }
        Self {
            entries,
            kprobe_missed,
        }
    }

    /// Each program's statistics now (those that cannot be read are left out).
    pub fn stats(&self) -> Vec<Stats> {
        self.entries
            .iter()
            .filter_map(|(name, entry)| {
                let ProgramCounts {
                    runs,
                    run_ns,
                    misses,
                } = info::program_counts(&entry.program).ok()?;
                let mut missed = misses;
                if !entry.kprobe_links.is_empty() {
                    let lost: Option<u64> = if self.kprobe_missed {
                        entry
                            .kprobe_links
                            .iter()
                            .map(|l| info::kprobe_missed(l).ok().flatten())
                            .sum()
                    } else {
                        None
                    };
                    missed = match (missed, lost) {
                        (Some(a), Some(b)) => Some(a + b),
                        // Before 6.7 kprobe hits can be lost without a count: say nothing.
                        _ => None,
                    };
                }
                Some(Stats {
                    program: name,
                    runs,
                    run_ns,
                    missed,
                })
            })
            .collect()
    }
}
