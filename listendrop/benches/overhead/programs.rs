//! What our kfree_skb program costs per call against bpftrace's on the same workload:
//! non-matching frees (every packet a host drops) and matching ones (an overflow flood).
//! Each is measured alone, alternating: attached together, whichever runs first pays for
//! bringing the tracepoint's data into the cache.

use listendrop_testsupport::{daemon::Daemon, netns::Netns, scenarios::overflow_flood};

use crate::{
    measure::{fastest, median_of, per_call, prog_stats, program_of},
    report::Report,
    workload::{udp_flood, Bpftrace},
};

/// Alternating rounds of each side.
const ROUNDS: usize = 7;

/// ns per call of each round: ours, bpftrace's, and the workload's total size.
struct SideBySide {
    ours: Vec<f64>,
    theirs: Vec<f64>,
    work: u64,
    program: String,
}

/// `ROUNDS` alternating rounds of `workload` (returns how much it sent) under our program
/// and under bpftrace's.
fn side_by_side(ns: &Netns, workload: impl Fn(&Netns) -> u64) -> Option<SideBySide> {
    let bpftrace = Bpftrace::program();
    let mut runs = SideBySide {
        ours: Vec::new(),
        theirs: Vec::new(),
        work: 0,
        program: String::new(),
    };
    for _ in 0..ROUNDS {
        let daemon = Daemon::start(&[]);
        let (id, name) = kfree_program(&daemon)?;
        runs.program = name;
        let before = prog_stats(id);
        runs.work += workload(ns);
        runs.ours.push(per_call(before, prog_stats(id)));
        drop(daemon);
        let peer = Bpftrace::start(&bpftrace);
        if let Some(id) = program_of(peer.pid(), "") {
            let before = prog_stats(id);
            workload(ns);
            runs.theirs.push(per_call(before, prog_stats(id)));
        }
    }
    Some(runs)
}

/// Our kfree_skb program (whichever kind the kernel gave us).
fn kfree_program(daemon: &Daemon) -> Option<(u64, String)> {
    crate::measure::programs_of(daemon.pid())
        .into_iter()
        .find(|(_, n)| n.starts_with("kfree_skb"))
}

/// One row comparing the fastest runs (noise only ever adds), medians shown too.
fn compare(report: &mut Report, what: &str, runs: Option<SideBySide>, slack_ns: f64) {
    let Some(mut runs) = runs else {
        report.row(
            what,
            "not attached here (kprobe/fentry chosen)".into(),
            "-",
            "n/a",
        );
        return;
    };
    let (o_min, o) = (fastest(&runs.ours), median_of(&mut runs.ours));
    let target = "no slower than bpftrace's on the same workload";
    if runs.theirs.is_empty() {
        report.row(
            what,
            format!("{o_min:.1} ns"),
            target,
            "bpftrace did not attach",
        );
        return;
    }
    let (t_min, t) = (fastest(&runs.theirs), median_of(&mut runs.theirs));
    let verdict = if o_min <= t_min {
        "met".to_owned()
    } else if o_min - t_min < slack_ns {
        format!("met (under {slack_ns} ns apart, less than the rounds' spread)")
    } else {
        format!(
            "**missed** by {:.1} ns ({:.2}×)",
            o_min - t_min,
            o_min / t_min
        )
    };
    report.row(
        &format!(
            "{what} ({}, {} sent, {ROUNDS} alternating runs)",
            runs.program, runs.work
        ),
        format!(
            "listendrop {o_min:.1} ns per call fastest, {o:.1} median; bpftrace {t_min:.1} \
             fastest, {t:.1} median"
        ),
        target,
        &verdict,
    );
}

pub fn measure(report: &mut Report, ns: &Netns) {
    // Both load the reason and compare it with an immediate (ours patched in for the
    // running kernel), nothing else: the same instructions once JITed. What is left
    // between them is the rounds' spread (about 1 ns between fastest and median).
    compare(
        report,
        "kfree_skb, non-matching frees (UDP datagrams to a closed port)",
        side_by_side(ns, |ns| udp_flood(ns, 2)),
        1.0,
    );
    // Ours attributes each drop (listener, class, handshake, event budget); bpftrace's
    // counts per rx_sk pointer.
    compare(
        report,
        "kfree_skb, matching frees (an ACK-time overflow flood; ours with full attribution, \
         bpftrace's count() per rx_sk)",
        side_by_side(ns, |ns| overflow_flood(ns, 4, 0).0),
        0.0,
    );
}
