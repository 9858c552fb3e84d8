//! What our kfree_skb program costs per call against bpftrace's on the same workload:
//! non-matching frees (every packet a host drops) and matching ones (an overflow flood).
//! Each is measured alone, alternating: attached together, whichever runs first pays for
//! bringing the tracepoint's data into the cache.

use listendrop_testsupport::{daemon::Daemon, netns::Netns, scenarios::overflow_flood};

use crate::{
    measure::{fastest, median_of, per_call, prog_stats, program_of, Sysctl},
    report::{mark, Report},
    workload::{purge, udp_flood, Bpftrace},
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

/// Datagrams freed per `close()` in [`dispatch_included`], and closes per round.
const PURGED: usize = 200_000;
const CLOSES: usize = 5;

/// What a non-matching free costs the kernel with our program attached, and with
/// bpftrace's, against with nothing attached: the time per free of [`purge`], alternating
/// the three. Unlike the programs' own accounting this includes the kernel's dispatch: a
/// classic tracepoint fills its trace record before it calls its programs, a `tp_btf` or
/// `raw_tp` program gets the arguments as they are. Measured with kernel.bpf_stats_enabled
/// off, as production runs (the accounting's two clock reads per call would add to every
/// side).
fn dispatch_included(report: &mut Report, ns: &Netns) {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "0");
    ns.sysctl("net.unix.max_dgram_qlen", &(PURGED + 1).to_string());
    let bpftrace = Bpftrace::program();
    let (mut none, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut program = String::new();
    for _ in 0..ROUNDS {
        none.push(purge(ns, PURGED, CLOSES));
        let daemon = Daemon::start(&[]);
        if let Some((_, name)) = kfree_program(&daemon) {
            program = name;
            ours.push(purge(ns, PURGED, CLOSES));
        }
        drop(daemon);
        let peer = Bpftrace::start(&bpftrace);
        if program_of(peer.pid(), "").is_some() {
            theirs.push(purge(ns, PURGED, CLOSES));
        }
    }
    let what = format!(
        "kfree_skb, non-matching frees, the kernel's dispatch included (AF_UNIX datagrams \
         freed by close(), {PURGED} per close; {program}, bpf_stats off, {ROUNDS} alternating \
         runs)"
    );
    let target = "adds no more per free than bpftrace's";
    if ours.is_empty() || theirs.is_empty() {
        report.row(&what, "not attached".into(), target, "n/a");
        return;
    }
    let base = (fastest(&none), median_of(&mut none));
    let added = |v: &mut Vec<f64>| (fastest(v) - base.0, median_of(v) - base.1);
    let (o, t) = (added(&mut ours), added(&mut theirs));
    report.row(
        &what,
        format!(
            "{:.1} ns per free with nothing attached; listendrop adds {:.1} ns fastest, \
             {:.1} median; bpftrace adds {:.1} fastest, {:.1} median",
            base.0, o.0, o.1, t.0, t.1
        ),
        target,
        mark(o.0 <= t.0),
    );
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
    // running kernel), nothing else: the same instructions once JITed. The accounting
    // times only the call into the program, between two clock reads whose cost depends on
    // the caller's context (tp_btf's and the classic tracepoint's differ); the next row
    // measures what each free costs the kernel as a whole.
    compare(
        report,
        "kfree_skb, non-matching frees, the program's own run time (UDP datagrams to a closed port)",
        side_by_side(ns, |ns| udp_flood(ns, 2)),
        1.0,
    );
    dispatch_included(report, ns);
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
