//! eBPF objects as the kernel reports them: the ones a process holds (its fds and
//! `/proc/PID/fdinfo`) and what bpftool says of each.

use std::process::Command;

use crate::netns::run;

/// Ids of the eBPF objects of `kind` (`prog` or `map`) `pid` holds, from its fds
/// (`anon_inode:bpf-prog`, `anon_inode:bpf-map`) and `/proc/PID/fdinfo` (`prog_id:`,
/// `map_id:`), each once.
pub fn objects_of(pid: u32, kind: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map_while(Result::ok)
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target.to_str() != Some(&format!("anon_inode:bpf-{kind}")) {
            continue;
        }
        // The fd may close between the two reads.
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_str().unwrap()
        )) else {
            continue;
        };
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{kind}_id:")))
            .unwrap_or_else(|| panic!("{kind}_id in fdinfo"));
        ids.push(id.trim().parse().unwrap());
    }
    // A process may hold an object through several fds.
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Ids of the eBPF programs `pid` holds.
pub fn programs_of(pid: u32) -> Vec<u64> {
    objects_of(pid, "prog")
}

/// Whether eBPF object `kind` (`prog` or `map`) `id` exists, as bpftool sees it.
pub fn exists(kind: &str, id: u64) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

/// What bpftool says of program `id`.
pub struct ProgramStats {
    /// Its name (at most 15 characters, as the kernel keeps it).
    pub name: String,
    /// Nanoseconds run, while `kernel.bpf_stats_enabled=1`.
    pub run_time_ns: u64,
    /// Runs, likewise.
    pub run_cnt: u64,
    /// Runs the kernel skipped (5.12+; bpftool shows only a non-zero count).
    pub recursion_misses: u64,
}

/// [`ProgramStats`] of program `id`.
pub fn program(id: u64) -> ProgramStats {
    let out = run(Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    ProgramStats {
        name: v["name"].as_str().unwrap_or("").to_owned(),
        run_time_ns: v["run_time_ns"].as_u64().unwrap_or(0),
        run_cnt: v["run_cnt"].as_u64().unwrap_or(0),
        recursion_misses: v["recursion_misses"].as_u64().unwrap_or(0),
    }
}

/// Every eBPF link on the host: id → what it attaches (its type and its program's id
/// and name). Links and programs that go away between the reads are left out.
pub fn links() -> std::collections::BTreeMap<u32, String> {
    let names: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| {
            let program = l.program_id();
            let kind = l
                .link_type()
                .map_or_else(|e| e.to_string(), |t| format!("{t:?}"));
            let name = names.get(&program).map_or("?", String::as_str);
            (l.id(), format!("{kind} link of program {program} {name}"))
        })
        .collect()
}
