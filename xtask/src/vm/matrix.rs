//! What the kernel matrix runs and what it expects: [`RUNS`] (how the tests run) and
//! [`MATRIX`] (one guest per row: run × architecture × kernel series, with the coverage
//! and the hook kinds today's daemon must show there). Both are meant to be edited by
//! hand when the daemon learns a new hook kind or a kernel starts allowing one.

use crate::arch::Arch;

/// Kernel series the matrix knows, oldest first.
pub const SERIES: &[&str] = &["5.10", "6.1", "6.12", "6.18"];

/// One way of running the privileged tests in a guest.
#[derive(Debug)]
pub struct Run {
    /// Its name in `--run`, log names and the summary.
    pub name: &'static str,
    /// `LISTENDROP_PROBE_KIND` in the guest (`None`: listendrop chooses).
    pub probe_kind: Option<&'static str>,
    /// Arguments for the test binary (libtest name filters; empty: every test).
    pub filter: &'static [&'static str],
}

/// The runs: every series with the hooks `auto` picks, then kinds forced where a second
/// kind must be proven too (only the tests whose result depends on the hooks: not the
/// HTTP one).
pub const RUNS: &[Run] = &[
    Run {
        name: "auto",
        probe_kind: None,
        filter: &[],
    },
    Run {
        name: "kprobe",
        probe_kind: Some("kprobe"),
        filter: HOOK_TESTS,
    },
    // The tracepoint kinds on 6.18 with fentry and kprobes refused, as on hosts without
    // kprobes and dynamic ftrace: each of the three, best first.
    Run {
        name: "tp_btf",
        probe_kind: Some("tp_btf"),
        filter: HOOK_TESTS,
    },
    Run {
        name: "raw_tp",
        probe_kind: Some("raw_tp"),
        filter: HOOK_TESTS,
    },
    Run {
        name: "tracepoint",
        probe_kind: Some("tracepoint"),
        filter: HOOK_TESTS,
    },
];

/// The tests whose result depends on the hooks (not the HTTP or inventory ones).
const HOOK_TESTS: &[&str] = &[
    "syn::",
    "ack::",
    "context::",
    "lifecycle::",
    "flood::",
    "reuseport::",
];

/// How one hook is attached, as `listendrop_probe_attached{kind}` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fentry,
    Kprobe,
    TpBtf,
    RawTp,
    Tracepoint,
    /// Not attached (not tried, or every kind refused).
    None,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::TpBtf => "tp_btf",
            Self::RawTp => "raw_tp",
            Self::Tracepoint => "tracepoint",
            Self::None => "none",
        }
    }
}

/// The hooks, as `listendrop_probe_attached{probe}` names them: the columns of
/// [`Expect::hooks`].
pub const PROBES: [&str; 5] = [
    "tcp_conn_request",
    "tcp_v4_syn_recv_sock",
    "tcp_v6_syn_recv_sock",
    "skb:kfree_skb",
    "tcp:tcp_retransmit_synack",
];

/// Whether every drop class must be observable (`LISTENDROP_EXPECT_FULL_COVERAGE=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    Full,
    /// Some classes may be unobservable (the tests then check they are reported absent).
    Partial,
}

/// One guest: a run on one architecture's kernel of one series, and what it must show.
#[derive(Debug)]
pub struct Expect {
    pub run: &'static str,
    pub arch: Arch,
    pub series: &'static str,
    pub coverage: Coverage,
    /// The kind each of [`PROBES`] is attached with.
    pub hooks: [Kind; PROBES.len()],
}

const fn row(
    run: &'static str,
    arch: Arch,
    series: &'static str,
    coverage: Coverage,
    hooks: [Kind; PROBES.len()],
) -> Expect {
    Expect {
        run,
        arch,
        series,
        coverage,
        hooks,
    }
}

/// Every guest of the matrix and what it expects, from `listendrop check` in each guest's
/// log (target/vm/*.log). `tcp:tcp_retransmit_synack` is a BTF tracepoint everywhere
/// (5.5+); `skb:kfree_skb` is attached only where no `syn_recv_sock` probe is and the
/// kernel frees the ACK with SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (6.15+). amd64 6.1:
/// `syn_recv_sock` has 7 arguments there (6.1.188+) and x86-64 trampolines before 6.6 take
/// 6, hence kprobes. arm64 5.10 and 6.1: the kernel refuses to attach fentry/fexit
/// (ENOTSUPP; arm64 gained BPF trampolines in 6.0 and the direct calls they need in 6.4),
/// hence kprobes.
#[rustfmt::skip]
pub const MATRIX: &[Expect] = {
    use Arch::{Amd64, Arm64};
    use Coverage::{Full, Partial};
    use Kind::{Fentry, Kprobe, None, RawTp, TpBtf, Tracepoint};
    &[
        //  run           arch   series  coverage  tcp_conn_request, tcp_v4_/tcp_v6_syn_recv_sock,
        //                                         skb:kfree_skb, tcp:tcp_retransmit_synack
        row("auto",       Amd64, "5.10", Full,    [Fentry, Fentry, Fentry, None,       TpBtf]),
        row("auto",       Amd64, "6.1",  Full,    [Fentry, Kprobe, Kprobe, None,       TpBtf]),
        row("auto",       Amd64, "6.12", Full,    [Fentry, Fentry, Fentry, None,       TpBtf]),
        row("auto",       Amd64, "6.18", Full,    [Fentry, Fentry, Fentry, None,       TpBtf]),
        row("auto",       Arm64, "5.10", Full,    [Kprobe, Kprobe, Kprobe, None,       TpBtf]),
        row("auto",       Arm64, "6.1",  Full,    [Kprobe, Kprobe, Kprobe, None,       TpBtf]),
        row("auto",       Arm64, "6.12", Full,    [Fentry, Fentry, Fentry, None,       TpBtf]),
        row("auto",       Arm64, "6.18", Full,    [Fentry, Fentry, Fentry, None,       TpBtf]),
        row("kprobe",     Amd64, "6.18", Full,    [Kprobe, Kprobe, Kprobe, None,       TpBtf]),
        row("tp_btf",     Amd64, "6.18", Partial, [None,   None,   None,   TpBtf,      TpBtf]),
        row("raw_tp",     Amd64, "6.18", Partial, [None,   None,   None,   RawTp,      RawTp]),
        row("tracepoint", Amd64, "6.18", Partial, [None,   None,   None,   Tracepoint, Tracepoint]),
    ]
};

impl Expect {
    /// The run this row belongs to.
    pub fn run(&self) -> &'static Run {
        RUNS.iter()
            .find(|r| r.name == self.run)
            .expect("every MATRIX row names a run of RUNS (unit-tested)")
    }

    /// The test binary's arguments: the run's filter.
    pub fn filter(&self) -> &'static [&'static str] {
        self.run().filter
    }

    /// `LISTENDROP_EXPECT_HOOKS`: `probe=kind` pairs, comma-separated.
    pub fn hooks_env(&self) -> String {
        PROBES
            .iter()
            .zip(self.hooks)
            .map(|(probe, kind)| format!("{probe}={}", kind.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The environment of the tests in this guest.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("LISTENDROP_EXPECT_HOOKS".to_owned(), self.hooks_env())];
        if self.coverage == Coverage::Full {
            env.push(("LISTENDROP_EXPECT_FULL_COVERAGE".to_owned(), "1".to_owned()));
        }
        if let Some(kind) = self.run().probe_kind {
            env.push(("LISTENDROP_PROBE_KIND".to_owned(), kind.to_owned()));
        }
        env
    }
}

/// The rows of [`MATRIX`] within the selection (an empty list selects everything).
pub fn select<'a>(arches: &[Arch], series: &[String], runs: &[String]) -> Vec<&'a Expect> {
    let pick = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    MATRIX
        .iter()
        .filter(|e| arches.is_empty() || arches.contains(&e.arch))
        .filter(|e| pick(series, e.series) && pick(runs, e.run))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{select, Arch, MATRIX, RUNS, SERIES};

    #[test]
    fn every_row_is_a_known_run_and_series_once() {
        for (i, e) in MATRIX.iter().enumerate() {
            assert!(RUNS.iter().any(|r| r.name == e.run), "{e:?}");
            assert!(SERIES.contains(&e.series), "{e:?}");
            assert!(
                !MATRIX[..i]
                    .iter()
                    .any(|o| (o.run, o.arch, o.series) == (e.run, e.arch, e.series)),
                "{e:?} twice"
            );
        }
        for run in RUNS {
            assert!(MATRIX.iter().any(|e| e.run == run.name), "{run:?} unused");
        }
    }

    #[test]
    fn every_kernel_runs_auto() {
        for arch in Arch::ALL {
            for series in SERIES {
                assert!(
                    MATRIX
                        .iter()
                        .any(|e| (e.run, e.arch, e.series) == ("auto", arch, *series)),
                    "{arch} {series}"
                );
            }
        }
    }

    #[test]
    fn environment_of_a_guest() {
        let kprobe = select(&[Arch::Amd64], &["6.18".into()], &["kprobe".into()]);
        let [e] = kprobe[..] else {
            panic!("{kprobe:?}")
        };
        assert_eq!(
            e.env(),
            [
                (
                    "LISTENDROP_EXPECT_HOOKS".to_owned(),
                    "tcp_conn_request=kprobe,tcp_v4_syn_recv_sock=kprobe,\
                     tcp_v6_syn_recv_sock=kprobe,skb:kfree_skb=none,\
                     tcp:tcp_retransmit_synack=tp_btf"
                        .to_owned()
                ),
                ("LISTENDROP_EXPECT_FULL_COVERAGE".to_owned(), "1".to_owned()),
                ("LISTENDROP_PROBE_KIND".to_owned(), "kprobe".to_owned()),
            ]
        );
        let tracepoints = select(&[Arch::Amd64], &["6.18".into()], &["tp_btf".into()]);
        assert_eq!(tracepoints.len(), 1);
        assert!(!tracepoints[0]
            .env()
            .iter()
            .any(|(k, _)| k.contains("COVERAGE")));
    }

    #[test]
    fn selection() {
        assert_eq!(select(&[], &[], &[]).len(), MATRIX.len());
        assert_eq!(select(&[Arch::Arm64], &[], &["kprobe".into()]).len(), 0);
        assert_eq!(select(&[], &["6.18".into()], &[]).len(), 6);
    }
}
