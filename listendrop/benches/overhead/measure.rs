//! Reading what the kernel and /proc say about a process and its programs, and summing
//! up repeated measures.

use std::process::Command;

use listendrop_testsupport::{bpf, netns::run};

/// Run time and run count of one program, from bpftool with kernel.bpf_stats_enabled=1.
pub fn prog_stats(id: u64) -> (u64, u64) {
    let p = bpf::program(id);
    (p.run_time_ns, p.run_cnt)
}

/// Nanoseconds per run between two [`prog_stats`] readings.
pub fn per_call(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64
}

/// Programs held by `pid` with their names.
pub fn programs_of(pid: u32) -> Vec<(u64, String)> {
    bpf::programs_of(pid)
        .into_iter()
        .map(|id| (id, bpf::program(id).name))
        .collect()
}

/// The program of `pid` whose name starts with `prefix`.
pub fn program_of(pid: u32, prefix: &str) -> Option<u64> {
    programs_of(pid)
        .into_iter()
        .find(|(_, n)| n.starts_with(prefix))
        .map(|(id, _)| id)
}

/// Sets a sysctl and restores it on drop.
pub struct Sysctl {
    key: &'static str,
    old: String,
}

impl Sysctl {
    pub fn set(key: &'static str, value: &str) -> Self {
        let old = run(Command::new("sysctl").args(["-n", key]))
            .trim()
            .to_owned();
        run(Command::new("sysctl").args(["-q", "-w", &format!("{key}={value}")]));
        Self { key, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = Command::new("sysctl")
            .args(["-q", "-w", &format!("{}={}", self.key, self.old)])
            .status();
    }
}

/// (utime + stime in seconds, VmHWM in bytes) of `pid`.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm * 1024)
}

/// Starts counting `pid`'s peak RSS (VmHWM) afresh (Linux 4.0+).
pub fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

pub fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The smallest: noise on a shared machine only ever adds time.
pub fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

/// How far apart the largest and smallest are, in percent of the largest.
pub fn spread(v: &[f64]) -> f64 {
    let (min, max) = v
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
    (max - min) / max * 100.0
}
