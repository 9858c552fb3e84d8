//! `cargo xtask bench`: what listendrop costs and how exact it stays under floods, measured
//! side by side with bpftrace on this machine. Prints a Markdown report on stdout (xtask
//! adds it to docs/benchmarks.md). Needs root. Not a pass/fail test: targets are reported
//! with the figures, and a miss is marked.

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
    let mut report = report::Report::new();
    let ns = Netns::new("bench");
    daemon::start_up(&mut report);
    programs::measure(&mut report, &ns);
    daemon::connection_overhead(&mut report);
    daemon::flood(&mut report, &ns);
    daemon::render(&mut report);
    report.print();
}
