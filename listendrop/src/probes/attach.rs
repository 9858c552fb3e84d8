//! Attaching each hook with the best kind allowed, transactionally: a pair (entry and
//! return) attaches whole or not at all, so no return probe ever runs without its entry.

use std::path::Path;

use aya::{
    programs::{
        fentry::FEntryLink, fexit::FExitLink, kprobe::KProbeLink, trace_point::TracePointLink,
        FEntry, FExit, KProbe, ProgramError, TracePoint,
    },
    Btf, Ebpf, Endianness,
};

use super::{Group, Hook, Kind, KindChoice};
use crate::{btf::KernelBtf, layout::Layout};

/// An attached link; dropping it detaches (unless it was pinned).
pub enum OwnedLink {
    /// fentry.
    FEntry(FEntryLink),
    /// fexit.
    FExit(FExitLink),
    /// kprobe or kretprobe.
    KProbe(KProbeLink),
    /// Tracepoint.
    TracePoint(TracePointLink),
    /// A pinned link (held open; dropping it leaves the hook attached through its pin).
    Pinned(aya::programs::links::PinnedLink),
}

/// An attached link and the hook it belongs to.
pub struct AttachedLink {
    /// What the hook reports.
    pub group: Group,
    /// The kernel function or tracepoint.
    pub probe: &'static str,
    /// How it is attached.
    pub kind: Kind,
    /// The link itself.
    pub link: OwnedLink,
}

/// The ACK-time functions: IPv4 and IPv6 (`tcp_v6_syn_recv_sock` is static).
const SYN_RECV_SOCK: [(&str, &str, &str); 2] = [
    (
        "tcp_v4_syn_recv_sock",
        "syn_recv_sock_v4_fentry",
        "syn_recv_sock_v4_fexit",
    ),
    (
        "tcp_v6_syn_recv_sock",
        "syn_recv_sock_v6_fentry",
        "syn_recv_sock_v6_fexit",
    ),
];

/// Attaches hooks one group at a time and records every attempt.
pub(super) struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    layout: &'a Layout,
    btf: &'a KernelBtf,
    btf_path: &'a Path,
    aya_btf: Option<Result<Btf, String>>,
    choice: KindChoice,
    hooks: Vec<Hook>,
    links: Vec<AttachedLink>,
}

impl<'a> Attacher<'a> {
    pub(super) fn new(
        ebpf: &'a mut Ebpf,
        layout: &'a Layout,
        btf: &'a KernelBtf,
        btf_path: &'a Path,
        choice: KindChoice,
    ) -> Self {
        Self {
            ebpf,
            layout,
            btf,
            btf_path,
            aya_btf: None,
            choice,
            hooks: Vec::new(),
            links: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> (Vec<Hook>, Vec<AttachedLink>) {
        (self.hooks, self.links)
    }

    /// SYN-time: `tcp_conn_request` by fentry, else kprobe. No tracepoint sees these.
    pub(super) fn syn(&mut self) {
        const FUNCTION: &str = "tcp_conn_request";
        if self.try_kind(Kind::Fentry) {
            let r = self.fentry_pair(FUNCTION, "conn_request_fentry", "conn_request_fexit");
            if self.record(Group::Syn, FUNCTION, Kind::Fentry, r) {
                return;
            }
        }
        if self.try_kind(Kind::Kprobe) {
            let r = self.kprobe_pair(FUNCTION, "conn_request_kprobe", "conn_request_kretprobe");
            if self.record(Group::Syn, FUNCTION, Kind::Kprobe, r) {
                return;
            }
        }
        if self.choice == KindChoice::Tracepoint {
            self.hooks.push(Hook {
                group: Group::Syn,
                probe: FUNCTION,
                kind: Kind::Tracepoint,
                status: Err(
                    "no tracepoint shows SYN-time drops; they need kprobes or fentry".into(),
                ),
            });
        }
    }

    /// ACK-time: both `syn_recv_sock`s by fentry, else kprobe, else `skb:kfree_skb`.
    pub(super) fn ack(&mut self) {
        // Each function takes the best kind it allows on its own: with IPv6 built as a
        // module, tcp_v6_syn_recv_sock has no vmlinux BTF (no fentry) but a kprobe works.
        // Mixed kinds are fine: both share the per-CPU call state.
        let mut attached = [false; 2];
        for (i, (function, entry, exit)) in SYN_RECV_SOCK.into_iter().enumerate() {
            for kind in [Kind::Fentry, Kind::Kprobe] {
                if !self.try_kind(kind) {
                    continue;
                }
                let r = match kind {
                    Kind::Fentry => self.fentry_pair(function, entry, exit),
                    _ => self.kprobe_pair(
                        function,
                        "syn_recv_sock_kprobe",
                        "syn_recv_sock_kretprobe",
                    ),
                };
                if self.record(Group::Ack, function, kind, r) {
                    attached[i] = true;
                    break;
                }
            }
        }
        match attached {
            [true, true] => return,
            [true, false] => {
                tracing::warn!(
                    "tcp_v6_syn_recv_sock could not be hooked: ACK-time drops of native IPv6 \
                     handshakes are not counted (IPv4, also on IPv6 sockets, are)"
                );
                return;
            }
            // Without the IPv4 function the probes are no use: undo a lone IPv6 attach.
            [false, true] => {
                self.undo_group(Group::Ack, Kind::Fentry);
                self.undo_group(Group::Ack, Kind::Kprobe);
            }
            [false, false] => {}
        }
        if self.try_kind(Kind::Tracepoint) {
            // The record layout of 6.11+ on 64-bit: the variant with a direct load.
            let o = &self.layout.offsets;
            let fixed = (
                o.tp_kfree_skb_skbaddr,
                o.tp_kfree_skb_rx_sk,
                o.tp_kfree_skb_reason,
            ) == (8, 24, 36);
            let program = if fixed {
                "kfree_skb_fixed"
            } else {
                "kfree_skb"
            };
            let r = match &self.layout.kfree_skb {
                Ok(()) => self.tracepoint(program, "skb", "kfree_skb"),
                Err(why) => Err(why.clone()),
            };
            self.record(Group::Ack, "skb:kfree_skb", Kind::Tracepoint, r);
        }
    }

    /// SYN-ACK retransmits: the `tcp:tcp_retransmit_synack` tracepoint, whatever the choice.
    pub(super) fn synack(&mut self) {
        let r = match &self.layout.synack {
            Ok(()) => self.tracepoint("tcp_retransmit_synack", "tcp", "tcp_retransmit_synack"),
            Err(why) => Err(why.clone()),
        };
        self.record(
            Group::Synack,
            "tcp:tcp_retransmit_synack",
            Kind::Tracepoint,
            r,
        );
    }

    fn try_kind(&self, kind: Kind) -> bool {
        self.choice.allows(kind)
    }

    /// Records an attempt; returns whether it attached.
    fn record(
        &mut self,
        group: Group,
        probe: &'static str,
        kind: Kind,
        result: Result<Vec<OwnedLink>, String>,
    ) -> bool {
        let status = result.map(|links| {
            self.links
                .extend(links.into_iter().map(|link| AttachedLink {
                    group,
                    probe,
                    kind,
                    link,
                }))
        });
        let ok = status.is_ok();
        self.hooks.push(Hook {
            group,
            probe,
            kind,
            status,
        });
        ok
    }

    /// Detaches what `group` attached with `kind` and marks those attempts failed.
    fn undo_group(&mut self, group: Group, kind: Kind) {
        for hook in &mut self.hooks {
            if hook.group == group && hook.kind == kind && hook.status.is_ok() {
                hook.status = Err("detached: the IPv4 function could not be attached".into());
            }
        }
        // Dropping the links detaches them.
        self.links.retain(|l| !(l.group == group && l.kind == kind));
    }

    /// Classifying needs the per-CPU MIB counters.
    fn mib(&self) -> Result<(), String> {
        self.layout.mib.clone()
    }

    fn aya_btf(&mut self) -> Result<&Btf, String> {
        let path = self.btf_path;
        self.aya_btf
            .get_or_insert_with(|| {
                Btf::parse_file(path, Endianness::default())
                    .map_err(|e| format!("cannot parse {} for fentry: {e}", path.display()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// fexit then fentry on `function`, both or neither.
    fn fentry_pair(
        &mut self,
        function: &str,
        entry: &str,
        exit: &str,
    ) -> Result<Vec<OwnedLink>, String> {
        let params = self
            .btf
            .function_params(function)
            .ok_or_else(|| format!("BTF does not describe {function} (inlined or in a module)"))?;
        if params > 6 && self.layout.version < (6, 6) && cfg!(target_arch = "x86_64") {
            return Err(format!(
                "{function} takes {params} arguments and x86-64 BPF trampolines before \
                 Linux 6.6 take at most 6"
            ));
        }
        self.mib()?;
        let btf = self.aya_btf()?.clone();
        let fexit: &mut FExit = program(self.ebpf, exit)?;
        load_once(fexit.load(function, &btf)).map_err(|e| refused(exit, &e))?;
        let id = fexit.attach().map_err(|e| failed(function, "fexit", &e))?;
        let exit_link = OwnedLink::FExit(
            fexit
                .take_link(id)
                .map_err(|e| failed(function, "fexit", &e))?,
        );
        let fentry: &mut FEntry = program(self.ebpf, entry)?;
        load_once(fentry.load(function, &btf)).map_err(|e| refused(entry, &e))?;
        let id = fentry
            .attach()
            .map_err(|e| failed(function, "fentry", &e))?;
        let entry_link = OwnedLink::FEntry(
            fentry
                .take_link(id)
                .map_err(|e| failed(function, "fentry", &e))?,
        );
        Ok(vec![exit_link, entry_link])
    }

    /// kretprobe then kprobe on `function`, both or neither.
    fn kprobe_pair(
        &mut self,
        function: &str,
        entry: &str,
        exit: &str,
    ) -> Result<Vec<OwnedLink>, String> {
        // The kprobe PMU (4.17+) is what aya attaches through.
        if !Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
            return Err("this kernel has no kprobes (CONFIG_KPROBES is not set)".into());
        }
        self.mib()?;
        let mut links = Vec::with_capacity(2);
        for name in [exit, entry] {
            let prog: &mut KProbe = program(self.ebpf, name)?;
            load_once(prog.load()).map_err(|e| refused(name, &e))?;
            let id = prog.attach(function, 0).map_err(|e| {
                format!(
                    "{} (does this kernel have CONFIG_KPROBES, and {function} in \
                     /proc/kallsyms?)",
                    failed(function, "kprobe", &e)
                )
            })?;
            links.push(OwnedLink::KProbe(
                prog.take_link(id)
                    .map_err(|e| failed(function, "kprobe", &e))?,
            ));
        }
        Ok(links)
    }

    fn tracepoint(
        &mut self,
        program_name: &str,
        category: &str,
        name: &str,
    ) -> Result<Vec<OwnedLink>, String> {
        let prog: &mut TracePoint = program(self.ebpf, program_name)?;
        load_once(prog.load()).map_err(|e| refused(program_name, &e))?;
        let id = prog.attach(category, name).map_err(|e| {
            format!("attaching to tracepoint {category}:{name} failed: {e:#} (is tracefs mounted?)")
        })?;
        let link = prog
            .take_link(id)
            .map_err(|e| format!("{category}:{name}: {e}"))?;
        Ok(vec![OwnedLink::TracePoint(link)])
    }
}

fn program<'e, T>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut T, String>
where
    &'e mut T: TryFrom<&'e mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

/// A program shared by several attach points is loaded by the first.
fn load_once(result: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match result {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        other => other,
    }
}

fn refused(program: &str, e: &ProgramError) -> String {
    format!("the kernel refused program {program}: {}", chain(e))
}

fn failed(function: &str, kind: &str, e: &ProgramError) -> String {
    format!("{kind} on {function}: {}", chain(e))
}

/// The error and its causes on one line; a verifier log is cut to its last lines, where
/// the reason is.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > 8 {
        format!(
            "{} [...] {}",
            lines[0],
            lines[lines.len() - 6..].join(" | ")
        )
    } else {
        lines.join(" | ")
    }
}
