//! Attaching each hook of the [table](super::table) with the best way the kernel and the
//! user's `--probe-kind` allow. A function pair (entry and return) attaches whole or not at
//! all, so no return probe ever runs without its entry.

use std::path::Path;

use aya::{
    programs::{
        kprobe::KProbeLink, links::FdLink, trace_point::TracePointLink, BtfTracePoint, FEntry,
        FExit, KProbe, ProgramError, RawTracePoint, TracePoint,
    },
    Ebpf,
};

use super::{
    table::{self, Group, HookSpec, Kind, Way},
    Hook, KindChoice,
};
use crate::layout::Layout;

/// An attached link; dropping it detaches (unless it was pinned).
pub enum OwnedLink {
    /// A BPF link (fentry/fexit, tp_btf, raw_tp): pinnable on every kernel.
    Fd(FdLink),
    /// kprobe or kretprobe (a BPF link since 5.15, a perf event before).
    KProbe(KProbeLink),
    /// Classic tracepoint (likewise).
    TracePoint(TracePointLink),
    /// A pinned link (held open; dropping it leaves the hook attached through its pin).
    Pinned(aya::programs::links::PinnedLink),
}

/// An attached link and the hook it belongs to.
pub struct AttachedLink {
    /// The hook.
    pub spec: &'static HookSpec,
    /// How it is attached.
    pub kind: Kind,
    /// Which of the way's programs it runs (index in [`Way::programs`]).
    pub program: usize,
    /// The link itself.
    pub link: OwnedLink,
}

impl AttachedLink {
    /// The name of the program it runs.
    pub fn program_name(&self) -> &'static str {
        self.spec
            .way(self.kind)
            .and_then(|w| w.programs.get(self.program))
            .copied()
            .unwrap_or("?")
    }
}

/// Attaches hooks one group at a time and records every attempt.
pub(super) struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    layout: &'a Layout,
    choice: KindChoice,
    hooks: Vec<Hook>,
    links: Vec<AttachedLink>,
}

impl<'a> Attacher<'a> {
    pub(super) fn new(ebpf: &'a mut Ebpf, layout: &'a Layout, choice: KindChoice) -> Self {
        Self {
            ebpf,
            layout,
            choice,
            hooks: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Attaches every hook of the table; returns the attempts and the links.
    pub(super) fn attach_all(mut self) -> (Vec<Hook>, Vec<AttachedLink>) {
        self.group(Group::Syn);
        self.ack();
        self.group(Group::Synack);
        self.unload_unused();
        (self.hooks, self.links)
    }

    /// Unloads the programs no link uses (loaded for a way the kernel then refused to
    /// attach, or undone): the daemon holds only what counts.
    fn unload_unused(&mut self) {
        let used: Vec<&str> = self.links.iter().map(AttachedLink::program_name).collect();
        let names = table::HOOKS
            .iter()
            .flat_map(|h| h.ways)
            .flat_map(|w| w.programs);
        for name in names {
            if !used.contains(name) {
                if let Some(program) = self.ebpf.program_mut(name) {
                    // Not loaded (never tried, or already unloaded): nothing to do.
                    let _ = unload(program);
                }
            }
        }
    }

    /// Each hook of `group` with its best allowed way.
    fn group(&mut self, group: Group) {
        for spec in table::HOOKS.iter().filter(|h| h.group == group) {
            self.hook(spec);
        }
    }

    /// ACK time: both `syn_recv_sock`s by a function probe (each the best kind it allows:
    /// with IPv6 built as a module, `tcp_v6_syn_recv_sock` may have no vmlinux BTF, so no
    /// fentry, where a kprobe works; both share the per-CPU call state); without the IPv4
    /// one, the freed ACKs (`skb:kfree_skb`) instead.
    fn ack(&mut self) {
        let [v4, v6, freed] = [
            "tcp_v4_syn_recv_sock",
            "tcp_v6_syn_recv_sock",
            "skb:kfree_skb",
        ]
        .map(|p| table::hook(p).expect("in the hook table"));
        // Forcing a tracepoint kind tests the freed-ACK path alone.
        if self.choice.forced().is_some_and(Kind::is_tracepoint) {
            self.hook(freed);
            return;
        }
        let v4_ok = self.hook(v4);
        let v6_ok = self.hook(v6);
        if v4_ok && !v6_ok {
            tracing::warn!(
                "tcp_v6_syn_recv_sock could not be hooked: ACK-time drops of native IPv6 \
                 handshakes are not counted (IPv4, also on IPv6 sockets, are)"
            );
        }
        if v4_ok {
            return;
        }
        if v6_ok {
            // Without the IPv4 function the probes are no use: undo the IPv6 attach.
            self.undo(v6, "detached: the IPv4 function could not be attached");
        }
        // Forcing a function kind tests that kind alone: no tracepoint stands in for it.
        if self.choice.forced().is_none() {
            self.hook(freed);
        }
    }

    /// Attaches `spec` with its best allowed way; records every attempt. Returns whether
    /// it attached.
    fn hook(&mut self, spec: &'static HookSpec) -> bool {
        let ways: Vec<&'static Way> = self.choice.ways(spec).collect();
        if ways.is_empty() {
            if let Some(kind) = self.choice.forced() {
                self.hooks.push(Hook {
                    spec,
                    kind,
                    status: Err(format!(
                        "--probe-kind {}: {} cannot be hooked that way",
                        kind.as_str(),
                        spec.probe
                    )),
                });
            }
            return false;
        }
        for way in ways {
            let result = self.try_way(spec, way);
            let ok = result.is_ok();
            let status =
                result.map(|links| {
                    self.links
                        .extend(links.into_iter().enumerate().map(|(program, link)| {
                            AttachedLink {
                                spec,
                                kind: way.kind,
                                program,
                                link,
                            }
                        }));
                });
            self.hooks.push(Hook {
                spec,
                kind: way.kind,
                status,
            });
            if ok {
                return true;
            }
        }
        false
    }

    /// Detaches what `spec` attached and marks the attempt failed with `why`.
    fn undo(&mut self, spec: &'static HookSpec, why: &str) {
        for hook in &mut self.hooks {
            if std::ptr::eq(hook.spec, spec) && hook.status.is_ok() {
                hook.status = Err(why.to_owned());
            }
        }
        // Dropping the links detaches them.
        self.links.retain(|l| !std::ptr::eq(l.spec, spec));
    }

    fn try_way(&mut self, spec: &HookSpec, way: &Way) -> Result<Vec<OwnedLink>, String> {
        self.layout.allows(spec.needs, way.kind)?;
        match way.kind {
            Kind::Fentry => self.fentry_pair(spec.probe, way.programs),
            Kind::Kprobe => self.kprobe_pair(spec.probe, way.programs),
            Kind::TpBtf => self.tp_btf(spec.probe, way.programs[0]),
            Kind::RawTp => self.raw_tp(spec.probe, way.programs[0]),
            Kind::Tracepoint => self.tracepoint(spec.probe, way.programs[0]),
        }
    }

    /// The BTF type id of `probe`'s attach target (the function, or the tracepoint's
    /// `btf_trace_<event>` typedef), resolved with the layout. The vendored aya loads with
    /// it directly (`load_with_btf_id`): aya's own way needs the kernel's whole BTF parsed
    /// its way (~17 MB), only to find this number.
    fn attach_id(&self, probe: &str, name: &str) -> Result<u32, String> {
        self.layout
            .attach_ids
            .get(probe)
            .copied()
            .ok_or_else(|| format!("this kernel's BTF does not describe {name}"))
    }

    /// fexit then fentry on `function`, both or neither.
    fn fentry_pair(&mut self, function: &str, programs: &[&str]) -> Result<Vec<OwnedLink>, String> {
        let params =
            *self.layout.function_params.get(function).ok_or_else(|| {
                format!("BTF does not describe {function} (inlined or in a module)")
            })?;
        if params > 6 && self.layout.version < (6, 6) && cfg!(target_arch = "x86_64") {
            return Err(format!(
                "{function} takes {params} arguments and x86-64 BPF trampolines before \
                 Linux 6.6 take at most 6"
            ));
        }
        let btf_id = self.attach_id(function, function)?;
        let [exit, entry] = [programs[0], programs[1]];
        let fexit: &mut FExit = program(self.ebpf, exit)?;
        load_once(fexit.load_with_btf_id(btf_id)).map_err(|e| {
            if permission_denied(&e) {
                format!(
                    "this kernel refuses fentry/fexit programs (EPERM): they need BPF \
                     trampolines, i.e. dynamic ftrace (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS); \
                     {exit}: {}",
                    chain(&e)
                )
            } else {
                refused(exit, &e)
            }
        })?;
        let id = fexit.attach().map_err(|e| failed(function, "fexit", &e))?;
        let exit_link = fexit
            .take_link(id)
            .map_err(|e| failed(function, "fexit", &e))?;
        let fentry: &mut FEntry = program(self.ebpf, entry)?;
        load_once(fentry.load_with_btf_id(btf_id)).map_err(|e| refused(entry, &e))?;
        let id = fentry
            .attach()
            .map_err(|e| failed(function, "fentry", &e))?;
        let entry_link = fentry
            .take_link(id)
            .map_err(|e| failed(function, "fentry", &e))?;
        Ok(vec![
            OwnedLink::Fd(exit_link.into()),
            OwnedLink::Fd(entry_link.into()),
        ])
    }

    /// kretprobe then kprobe on `function`, both or neither.
    fn kprobe_pair(&mut self, function: &str, programs: &[&str]) -> Result<Vec<OwnedLink>, String> {
        // The kprobe PMU (4.17+) is what aya attaches through.
        if !Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
            return Err("this kernel has no kprobes (CONFIG_KPROBES is not set)".into());
        }
        let mut links = Vec::with_capacity(2);
        for name in programs {
            let prog: &mut KProbe = program(self.ebpf, name)?;
            load_once(prog.load()).map_err(|e| refused(name, &e))?;
            let id = prog.attach(function, 0).map_err(|e| {
                format!(
                    "{} (does this kernel have CONFIG_KPROBES, and {function} in \
                     /proc/kallsyms?)",
                    failed(function, "kprobe", &e)
                )
            })?;
            let link = prog
                .take_link(id)
                .map_err(|e| failed(function, "kprobe", &e))?;
            links.push(perf_link(link, FdLink::try_from, OwnedLink::KProbe)?);
        }
        Ok(links)
    }

    fn tp_btf(&mut self, probe: &str, name: &str) -> Result<Vec<OwnedLink>, String> {
        let event = tracepoint_name(probe);
        let btf_id = self.attach_id(probe, &format!("btf_trace_{event}"))?;
        let prog: &mut BtfTracePoint = program(self.ebpf, name)?;
        load_once(prog.load_with_btf_id(btf_id)).map_err(|e| refused(name, &e))?;
        let id = prog.attach().map_err(|e| failed(probe, "tp_btf", &e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| failed(probe, "tp_btf", &e))?;
        Ok(vec![OwnedLink::Fd(link.into())])
    }

    fn raw_tp(&mut self, probe: &str, name: &str) -> Result<Vec<OwnedLink>, String> {
        let prog: &mut RawTracePoint = program(self.ebpf, name)?;
        load_once(prog.load()).map_err(|e| refused(name, &e))?;
        let id = prog
            .attach(tracepoint_name(probe))
            .map_err(|e| failed(probe, "raw_tp", &e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| failed(probe, "raw_tp", &e))?;
        Ok(vec![OwnedLink::Fd(link.into())])
    }

    fn tracepoint(&mut self, probe: &str, name: &str) -> Result<Vec<OwnedLink>, String> {
        let (category, event) = probe.split_once(':').unwrap_or(("", probe));
        let prog: &mut TracePoint = program(self.ebpf, name)?;
        load_once(prog.load()).map_err(|e| refused(name, &e))?;
        let id = prog.attach(category, event).map_err(|e| {
            format!("attaching to tracepoint {probe} failed: {e:#} (is tracefs mounted?)")
        })?;
        let link = prog.take_link(id).map_err(|e| format!("{probe}: {e}"))?;
        Ok(vec![perf_link(
            link,
            FdLink::try_from,
            OwnedLink::TracePoint,
        )?])
    }
}

/// A kprobe or tracepoint link as a BPF link where the kernel makes it one (5.15+: it can
/// then be pinned and asked for its misses), as the perf event it is otherwise.
fn perf_link<L, E: std::fmt::Display>(
    link: L,
    into_fd: impl FnOnce(L) -> Result<FdLink, E>,
    perf: impl FnOnce(L) -> OwnedLink,
) -> Result<OwnedLink, String> {
    if aya::features().bpf_perf_link() {
        // aya attaches through a BPF link exactly when the kernel has them, so this does
        // not fail; if it did, the link would be gone (detached): an attach failure.
        into_fd(link)
            .map(OwnedLink::Fd)
            .map_err(|e| format!("the link is not a BPF link: {e}"))
    } else {
        Ok(perf(link))
    }
}

/// `kfree_skb` of `skb:kfree_skb`: raw and BTF tracepoints are named without category.
fn tracepoint_name(probe: &str) -> &str {
    probe.split_once(':').map_or(probe, |(_, name)| name)
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

/// Unloads `program` (of the kinds the hook table uses).
fn unload(program: &mut aya::programs::Program) -> Result<(), ProgramError> {
    use aya::programs::Program;
    match program {
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}

/// Whether the kernel answered a load with EPERM (with the privileges checked first, a
/// kernel that cannot run this kind of program).
fn permission_denied(e: &ProgramError) -> bool {
    matches!(e, ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EPERM))
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

fn failed(probe: &str, kind: &str, e: &ProgramError) -> String {
    format!("{kind} on {probe}: {}", chain(e))
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
