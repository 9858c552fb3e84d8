//! The one table of hooks: each kernel function or tracepoint listendrop hooks, every way
//! it can be hooked (kind and program names, best first), the first kernel that has that
//! way, and the classes it sees. Attaching, pin names, coverage and `check` all read it;
//! no program name or index is written anywhere else on the user side.

use listendrop_common::Reason;

/// Where in the handshake a hook sees drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// SYN time: `tcp_conn_request`.
    Syn,
    /// ACK time: `syn_recv_sock`, or the freed ACK (`skb:kfree_skb`).
    Ack,
    /// SYN-ACK retransmits.
    Synack,
}

impl Group {
    /// The name used in pin paths and `check`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Ack => "ack",
            Self::Synack => "synack",
        }
    }
}

/// How a hook is attached, best (cheapest) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Kind {
    /// fentry/fexit (BPF trampolines, 5.5+; needs dynamic ftrace): typed arguments.
    Fentry,
    /// kprobe/kretprobe (CONFIG_KPROBES).
    Kprobe,
    /// BTF-typed raw tracepoint (5.5+): typed arguments, no record to fill.
    #[value(name = "tp_btf")]
    TpBtf,
    /// Raw tracepoint (4.17+): the arguments, no record to fill.
    #[value(name = "raw_tp")]
    RawTp,
    /// Classic tracepoint: a record the kernel fills first, then the program.
    Tracepoint,
}

impl Kind {
    /// Every kind, best first.
    pub const ALL: [Self; 5] = [
        Self::Fentry,
        Self::Kprobe,
        Self::TpBtf,
        Self::RawTp,
        Self::Tracepoint,
    ];

    /// The `kind` label (and `--probe-kind` value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::TpBtf => "tp_btf",
            Self::RawTp => "raw_tp",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// The kind named `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == label)
    }

    /// Whether this kind hooks a tracepoint (rather than a kernel function).
    pub const fn is_tracepoint(self) -> bool {
        matches!(self, Self::TpBtf | Self::RawTp | Self::Tracepoint)
    }
}

/// One way to attach a hook.
#[derive(Debug)]
pub struct Way {
    /// The kind.
    pub kind: Kind,
    /// Program names in the eBPF object: (return, entry) for function pairs, attached in
    /// that order so that no return probe runs without its entry; one for tracepoints.
    pub programs: &'static [&'static str],
    /// The first Linux version with this way (for `check`).
    pub since: &'static str,
}

/// What a hook's programs need of the kernel's layout (see [`crate::layout::Layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// The namespace's per-CPU MIB counters (to classify drops inside a function).
    Mib,
    /// `skb:kfree_skb` with `rx_sk` (6.11+) and the listen-overflow drop reason (6.15+).
    FreedAck,
    /// `tcp:tcp_retransmit_synack`'s request socket.
    SynackRequest,
}

/// One hooked kernel function or tracepoint.
#[derive(Debug)]
pub struct HookSpec {
    /// What its programs need of the kernel's layout.
    pub needs: Needs,
    /// What it reports.
    pub group: Group,
    /// The kernel function, or `category:name` of the tracepoint.
    pub probe: &'static str,
    /// The ways to hook it, best first.
    pub ways: &'static [Way],
    /// The classes of event it sees whole (every event of the class at its site).
    pub sees: &'static [Reason],
    /// Classes it counts only part of (their coverage needs another hook too).
    pub sees_partly: &'static [Reason],
}

impl HookSpec {
    /// Its position in [`HOOKS`] (pin names use it).
    pub fn index(&self) -> usize {
        HOOKS
            .iter()
            .position(|h| std::ptr::eq(h, self))
            .unwrap_or(usize::MAX)
    }

    /// The way of `kind`, if this hook has one.
    pub fn way(&self, kind: Kind) -> Option<&'static Way> {
        self.ways.iter().find(|w| w.kind == kind)
    }
}

/// The SYN-time classes, seen whole at `tcp_conn_request`.
const SYN_TIME: &[Reason] = &[
    Reason::SynAcceptQueueFull,
    Reason::SynQueueFull,
    Reason::SynBacklogPressure,
    Reason::SyncookieSent,
];

/// The ACK-time classes `syn_recv_sock` sees whole.
const ACK_TIME: &[Reason] = &[
    Reason::AckAcceptQueueFull,
    Reason::CookieAckAcceptQueueFull,
    Reason::OverflowReset,
];

/// Every hook, in attach order. `index()` of an entry is part of its pins' names: append,
/// never reorder (an upgrade changes the object, and with it the pin fingerprint, anyway).
pub static HOOKS: [HookSpec; 5] = [
    HookSpec {
        needs: Needs::Mib,
        group: Group::Syn,
        probe: "tcp_conn_request",
        ways: &[
            Way {
                kind: Kind::Fentry,
                programs: &["conn_request_fexit", "conn_request_fentry"],
                since: "5.5",
            },
            Way {
                kind: Kind::Kprobe,
                programs: &["conn_request_kretprobe", "conn_request_kprobe"],
                since: "4.17",
            },
        ],
        sees: SYN_TIME,
        sees_partly: &[Reason::Other],
    },
    HookSpec {
        needs: Needs::Mib,
        group: Group::Ack,
        probe: "tcp_v4_syn_recv_sock",
        ways: &[
            Way {
                kind: Kind::Fentry,
                programs: &["syn_recv_sock_v4_fexit", "syn_recv_sock_v4_fentry"],
                since: "5.5",
            },
            Way {
                kind: Kind::Kprobe,
                programs: &["syn_recv_sock_kretprobe", "syn_recv_sock_kprobe"],
                since: "4.17",
            },
        ],
        sees: ACK_TIME,
        sees_partly: &[Reason::Other],
    },
    HookSpec {
        needs: Needs::Mib,
        group: Group::Ack,
        probe: "tcp_v6_syn_recv_sock",
        ways: &[
            Way {
                kind: Kind::Fentry,
                programs: &["syn_recv_sock_v6_fexit", "syn_recv_sock_v6_fentry"],
                since: "5.5",
            },
            Way {
                kind: Kind::Kprobe,
                programs: &["syn_recv_sock_kretprobe", "syn_recv_sock_kprobe"],
                since: "4.17",
            },
        ],
        sees: ACK_TIME,
        sees_partly: &[Reason::Other],
    },
    HookSpec {
        needs: Needs::FreedAck,
        group: Group::Ack,
        probe: "skb:kfree_skb",
        ways: &[
            Way {
                kind: Kind::TpBtf,
                programs: &["kfree_skb_btf"],
                since: "6.15",
            },
            Way {
                kind: Kind::RawTp,
                programs: &["kfree_skb_raw"],
                since: "6.15",
            },
            Way {
                kind: Kind::Tracepoint,
                programs: &["kfree_skb"],
                since: "6.15",
            },
        ],
        // The syncookie path frees its ACK with another reason: only tcp_check_req's
        // drops are seen, so neither cookie_ack_accept_queue_full nor all of `other`.
        sees: &[Reason::AckAcceptQueueFull, Reason::OverflowReset],
        sees_partly: &[Reason::Other],
    },
    HookSpec {
        needs: Needs::SynackRequest,
        group: Group::Synack,
        probe: "tcp:tcp_retransmit_synack",
        ways: &[
            Way {
                kind: Kind::TpBtf,
                programs: &["retransmit_synack_btf"],
                since: "5.5",
            },
            Way {
                kind: Kind::RawTp,
                programs: &["retransmit_synack_raw"],
                since: "4.17",
            },
            Way {
                kind: Kind::Tracepoint,
                programs: &["tcp_retransmit_synack"],
                since: "4.15",
            },
        ],
        sees: &[Reason::SynackRetransmit],
        sees_partly: &[],
    },
];

/// The hook named `probe`.
pub fn hook(probe: &str) -> Option<&'static HookSpec> {
    HOOKS.iter().find(|h| h.probe == probe)
}

/// Where the kernel produces each class: the hooks that must all be attached (any hook of
/// a site will do) for the class to be seen whole. A site is a set of alternative hooks.
fn sites(reason: Reason) -> &'static [&'static [&'static str]] {
    const SYN: &[&str] = &["tcp_conn_request"];
    const ACK_V4: &[&str] = &["tcp_v4_syn_recv_sock", "skb:kfree_skb"];
    const ACK_V6: &[&str] = &["tcp_v6_syn_recv_sock", "skb:kfree_skb"];
    const COOKIE_V4: &[&str] = &["tcp_v4_syn_recv_sock"];
    const COOKIE_V6: &[&str] = &["tcp_v6_syn_recv_sock"];
    const SYNACK: &[&str] = &["tcp:tcp_retransmit_synack"];
    match reason {
        Reason::SynAcceptQueueFull
        | Reason::SynQueueFull
        | Reason::SynBacklogPressure
        | Reason::SyncookieSent => &[SYN],
        Reason::AckAcceptQueueFull | Reason::OverflowReset => &[ACK_V4, ACK_V6],
        Reason::CookieAckAcceptQueueFull => &[COOKIE_V4, COOKIE_V6],
        // SYN-time route/LSM/memory failures, and child failures on both ACK paths.
        Reason::Other => &[SYN, COOKIE_V4, COOKIE_V6],
        Reason::SynackRetransmit => &[SYNACK],
    }
}

/// Whether each class is seen whole when the hooks `attached` (probe names) are.
pub fn coverage(attached: &[&str]) -> Vec<(Reason, bool)> {
    Reason::ALL
        .iter()
        .map(|&reason| {
            let covered = sites(reason).iter().all(|site| {
                site.iter().any(|probe| {
                    attached.contains(probe)
                        && hook(probe).is_some_and(|h| {
                            h.sees.contains(&reason) || h.sees_partly.contains(&reason)
                        })
                })
            });
            (reason, covered)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(attached: &[&str], reason: Reason) -> bool {
        coverage(attached)
            .into_iter()
            .find(|(r, _)| *r == reason)
            .unwrap()
            .1
    }

    #[test]
    fn tracepoint_only_host_sees_ack_overflows_and_synacks_only() {
        let attached = ["skb:kfree_skb", "tcp:tcp_retransmit_synack"];
        for reason in [
            Reason::AckAcceptQueueFull,
            Reason::OverflowReset,
            Reason::SynackRetransmit,
        ] {
            assert!(covered(&attached, reason), "{reason:?}");
        }
        for reason in [
            Reason::SynAcceptQueueFull,
            Reason::SynQueueFull,
            Reason::SynBacklogPressure,
            Reason::SyncookieSent,
            Reason::CookieAckAcceptQueueFull,
            Reason::Other,
        ] {
            assert!(!covered(&attached, reason), "{reason:?}");
        }
    }

    #[test]
    fn function_probes_see_everything() {
        let attached = [
            "tcp_conn_request",
            "tcp_v4_syn_recv_sock",
            "tcp_v6_syn_recv_sock",
            "tcp:tcp_retransmit_synack",
        ];
        assert!(coverage(&attached).iter().all(|(_, c)| *c));
        // Without the IPv6 function, IPv6 ACK-time drops are not all seen.
        let v4_only = [
            "tcp_conn_request",
            "tcp_v4_syn_recv_sock",
            "tcp:tcp_retransmit_synack",
        ];
        assert!(!covered(&v4_only, Reason::AckAcceptQueueFull));
        assert!(covered(&v4_only, Reason::SynQueueFull));
    }

    #[test]
    fn program_names_are_unique_per_way_and_kinds_in_order() {
        for hook in &HOOKS {
            let kinds: Vec<Kind> = hook.ways.iter().map(|w| w.kind).collect();
            let mut sorted = kinds.clone();
            sorted.sort();
            assert_eq!(kinds, sorted, "{} ways best first", hook.probe);
            for way in hook.ways {
                let pair = matches!(way.kind, Kind::Fentry | Kind::Kprobe);
                assert_eq!(
                    way.programs.len(),
                    if pair { 2 } else { 1 },
                    "{}",
                    hook.probe
                );
                assert_eq!(way.kind.is_tracepoint(), hook.probe.contains(':'));
            }
        }
        assert_eq!(hook("skb:kfree_skb").unwrap().index(), 3);
        assert_eq!(Kind::from_label("tp_btf"), Some(Kind::TpBtf));
    }
}
