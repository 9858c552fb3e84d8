//! `cargo xtask bench`: what listendrop costs and how exact it stays under floods, measured
//! side by side with bpftrace on this machine. Prints a Markdown report on stdout (xtask
//! adds it to docs/benchmarks.md). Needs root. Not a pass/fail test: targets are reported
//! with the figures, and a miss is marked.

mod containers;
mod daemon;
mod measure;
mod programs;
mod report;
mod workload;

use listendrop_testsupport::netns::Netns;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the benchmarks load eBPF programs and create namespaces: run as root (cargo xtask \
             bench)"
        );
        std::process::exit(1);
    }
    let _stats = measure::Sysctl::set("kernel.bpf_stats_enabled", "1");
    // Sections named on the command line run alone (`cargo bench --bench overhead --
    // programs`), for working on one of them; the report is every section.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut report = report::Report::new();
    let ns = Netns::new("bench");
    if wanted("start-up") {
        daemon::start_up(&mut report);
    }
    if wanted("programs") {
        programs::measure(&mut report, &ns);
    }
    if wanted("connections") {
        daemon::connection_overhead(&mut report);
    }
    if wanted("flood") {
        daemon::flood(&mut report, &ns);
    }
    if wanted("render") {
        daemon::render(&mut report);
    }
    // The inventory pass on a host with 200 containers, with and without their identity.
    if wanted("containers") {
        for (what, value, target, verdict) in containers::inventory_with_containers() {
            report.row(&what, value, &target, &verdict);
        }
    }
    report.print();
}
