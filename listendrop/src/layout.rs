//! The kernel layout the programs need, resolved for the running kernel, and which hooks
//! that layout allows.

use listendrop_common::KernelOffsets;

use crate::{
    btf::{BtfError, KernelBtf},
    probes::table::{Kind, Needs},
    tracefs::Tracefs,
};

/// Offsets for the programs, and per need of the hooks whether this kernel meets it
/// (`Err` holds a sentence naming the kernel version or the fix).
pub struct Layout {
    /// Everything the programs read.
    pub offsets: KernelOffsets,
    /// `skb:kfree_skb`'s arguments (tp_btf, raw_tp) can report ACK-time drops (6.15+).
    pub kfree_skb_args: Result<(), String>,
    /// `skb:kfree_skb`'s record (classic tracepoint) can report them.
    pub kfree_skb_record: Result<(), String>,
    /// `tcp:tcp_retransmit_synack`'s record can be read (classic tracepoint).
    pub synack_record: Result<(), String>,
    /// Its request socket can be read (tp_btf, raw_tp).
    pub synack_args: Result<(), String>,
    /// The per-CPU MIB counters the kprobe/fentry hooks classify with can be read.
    pub mib: Result<(), String>,
    /// `(major, minor)` of the running kernel.
    pub version: (u32, u32),
    /// The parameter count of each hooked kernel function BTF describes (fentry needs
    /// BTF; a 7-argument function takes no x86-64 trampoline before 6.6).
    pub function_params: std::collections::BTreeMap<&'static str, usize>,
    /// The BTF type id each hook's BTF-typed programs attach to (fentry/fexit: the
    /// function's; tp_btf: the tracepoint's `btf_trace_<event>` typedef's), by probe.
    pub attach_ids: std::collections::BTreeMap<&'static str, u32>,
}

impl Layout {
    /// Resolves the layout. Fails only when the socket and packet fields every hook reads
    /// are missing; a hook-specific gap lands in that hook's field.
    pub fn resolve(btf: &KernelBtf, tracefs: Result<&Tracefs, &str>) -> Result<Self, BtfError> {
        let ptr = std::mem::size_of::<usize>();
        let mut offsets = KernelOffsets {
            sk_family: btf.member_sized("sock", "__sk_common.skc_family", 2)?,
            sk_state: btf.member_sized("sock", "__sk_common.skc_state", 1)?,
            sk_num: btf.member_sized("sock", "__sk_common.skc_num", 2)?,
            sk_rcv_saddr: btf.member_sized("sock", "__sk_common.skc_rcv_saddr", 4)?,
            sk_v6_rcv_saddr: btf.member_sized("sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
            sk_daddr: btf.member_sized("sock", "__sk_common.skc_daddr", 4)?,
            sk_dport: btf.member_sized("sock", "__sk_common.skc_dport", 2)?,
            sk_v6_daddr: btf.member_sized("sock", "__sk_common.skc_v6_daddr", 16)?,
            // possible_net_t { struct net *net; } (a pointer-sized struct, all kernels).
            sk_net: btf.member_sized("sock", "__sk_common.skc_net", ptr)?,
            sk_cookie: btf.member_sized("sock", "__sk_common.skc_cookie", 8)?,
            sk_ack_backlog: btf.member_sized("sock", "sk_ack_backlog", 4)?,
            sk_max_ack_backlog: btf.member_sized("sock", "sk_max_ack_backlog", 4)?,
            // struct sock is the first member of inet_sock, itself the first of
            // inet_connection_sock, so this offset applies to the listener's sock pointer.
            icsk_syn_qlen: btf.member_sized("inet_connection_sock", "icsk_accept_queue.qlen", 4)?,
            net_ns_inum: btf.member_sized("net", "ns.inum", 4)?,
            net_abort_on_overflow: btf
                .member("net", "ipv4.sysctl_tcp_abort_on_overflow")?
                .offset,
            net_abort_on_overflow_size: sysctl_size(btf, "ipv4.sysctl_tcp_abort_on_overflow")?,
            skb_head: btf.member_sized("sk_buff", "head", ptr)?,
            skb_network_header: btf.member_sized("sk_buff", "network_header", 2)?,
            skb_transport_header: btf.member_sized("sk_buff", "transport_header", 2)?,
            skb_protocol: btf.member_sized("sk_buff", "protocol", 2)?,
            ..KernelOffsets::default()
        };
        offsets.packet_loads = u32::from(packet_loads(btf));
        let reason = listen_overflow_reason(btf, &mut offsets);
        let kfree_skb_args = reason.clone().and_then(|()| kfree_skb_args(btf));
        let kfree_skb_record = reason.and_then(|()| resolve_kfree_skb(tracefs, &mut offsets));
        let synack_record = resolve_synack(tracefs, &mut offsets);
        let synack_args = request_sock(btf);
        let mib = resolve_mib(btf, &mut offsets);
        let function_params = crate::probes::table::HOOKS
            .iter()
            .filter(|h| !h.probe.contains(':'))
            .filter_map(|h| Some((h.probe, btf.function_params(h.probe)?)))
            .collect();
        let attach_ids = crate::probes::table::HOOKS
            .iter()
            .filter_map(|h| Some((h.probe, attach_id(btf, h.probe)?)))
            .collect();
        Ok(Self {
            function_params,
            attach_ids,
            offsets,
            kfree_skb_args,
            kfree_skb_record,
            synack_record,
            synack_args,
            mib,
            version: kernel_version(),
        })
    }

    /// Whether a hook that `needs` this can be attached as `kind` here, and if not why.
    pub fn allows(&self, needs: Needs, kind: Kind) -> Result<(), String> {
        match (needs, kind) {
            (Needs::Mib, _) => self.mib.clone(),
            (Needs::FreedAck, Kind::Tracepoint) => self.kfree_skb_record.clone(),
            (Needs::FreedAck, _) => self.kfree_skb_args.clone(),
            (Needs::SynackRequest, Kind::Tracepoint) => self.synack_record.clone(),
            (Needs::SynackRequest, _) => self.synack_args.clone(),
        }
    }
}

/// The BTF id a BTF-typed program on `probe` attaches to: a tracepoint's (`skb:kfree_skb`)
/// `btf_trace_kfree_skb` typedef, or a kernel function.
fn attach_id(btf: &KernelBtf, probe: &str) -> Option<u32> {
    match probe.split_once(':') {
        Some((_, event)) => btf.typedef_id(&format!("btf_trace_{event}")),
        None => btf.func_id(probe),
    }
}

/// `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` (6.15+), the reason `skb:kfree_skb` reports an
/// ACK that got no child socket with.
fn listen_overflow_reason(btf: &KernelBtf, offsets: &mut KernelOffsets) -> Result<(), String> {
    let value = btf
        .enum_value("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
        .map_err(|_| {
            "this kernel has no SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (added in Linux 6.15): \
             ACK-time overflows are not visible through tracepoints here"
                .to_owned()
        })?;
    offsets.reason_tcp_listen_overflow =
        u32::try_from(value).map_err(|_| format!("drop reason value {value} does not fit u32"))?;
    Ok(())
}

/// Whether BTF-typed programs may load packet bytes through `sk_buff.head`: newer
/// verifiers (6.17+) type a pointer to a primitive type, loaded through a typed pointer, as
/// read-only untrusted memory (faulting loads read zero). That came with the verifier work
/// `enum bpf_features` announces (its first value, `BPF_FEAT_RDONLY_CAST_TO_VOID`:
/// `bpf_rdonly_cast` to `void *`, the same kind of memory), the one mark of it in BTF.
/// Checked on 6.18, where the tp_btf program loads so; the matrix's older kernels have
/// neither and read the headers with the helper. Were a kernel to have the enum without
/// the typed loads, the verifier would refuse the tp_btf program and the hook would fall
/// back to `raw_tp` (logged as not attached, with the verifier's words): slower, never
/// wrong.
pub(crate) fn packet_loads(btf: &KernelBtf) -> bool {
    btf.enum_value("bpf_features", "BPF_FEAT_RDONLY_CAST_TO_VOID")
        .is_ok()
}

/// `kfree_skb(skb, location, reason, rx_sk)`: the listener argument came in 6.11.
fn kfree_skb_args(btf: &KernelBtf) -> Result<(), String> {
    match btf.typedef_params("btf_trace_kfree_skb") {
        // The context, then the four arguments.
        Some(5) => Ok(()),
        Some(n) => Err(format!(
            "skb:kfree_skb has {} arguments here; listendrop needs rx_sk (added in Linux 6.11)",
            n.saturating_sub(1)
        )),
        None => {
            Err("this kernel's BTF does not describe skb:kfree_skb (btf_trace_kfree_skb)".into())
        }
    }
}

/// The request socket of `tcp:tcp_retransmit_synack` is read with `struct sock`'s
/// `sock_common` offsets: its `__req_common` must be at offset 0 (every kernel).
fn request_sock(btf: &KernelBtf) -> Result<(), String> {
    match btf.member("request_sock", "__req_common") {
        Ok(m) if m.offset == 0 => Ok(()),
        Ok(m) => Err(format!(
            "struct request_sock's __req_common is at offset {}, not 0",
            m.offset
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Size of an int-or-u8 sysctl in `struct net` (int until 6.0, u8 since).
fn sysctl_size(btf: &KernelBtf, path: &str) -> Result<u32, BtfError> {
    let member = btf.member("net", path)?;
    match member.size {
        1 | 4 => Ok(member.size as u32),
        other => Err(BtfError::Layout {
            strukt: "net".into(),
            member: path.into(),
            found: format!("{other} bytes"),
            expected: "1 or 4 bytes".into(),
        }),
    }
}

fn resolve_kfree_skb(
    tracefs: Result<&Tracefs, &str>,
    offsets: &mut KernelOffsets,
) -> Result<(), String> {
    let fields = tracefs
        .map_err(str::to_owned)?
        .fields("skb", "kfree_skb")
        .ok_or("this kernel has no skb:kfree_skb tracepoint")?;
    let field = |name: &str, size: u32, since: &str| {
        fields
            .get(name)
            .filter(|f| f.size == size)
            .map(|f| f.offset)
            .ok_or(format!(
                "skb:kfree_skb has no {size}-byte `{name}` field (added in Linux {since})"
            ))
    };
    offsets.tp_kfree_skb_skbaddr = field("skbaddr", 8, "2.6")?;
    offsets.tp_kfree_skb_reason = field("reason", 4, "5.17")?;
    offsets.tp_kfree_skb_rx_sk = field("rx_sk", 8, "6.11")?;
    Ok(())
}

fn resolve_synack(
    tracefs: Result<&Tracefs, &str>,
    offsets: &mut KernelOffsets,
) -> Result<(), String> {
    let fields = tracefs
        .map_err(str::to_owned)?
        .fields("tcp", "tcp_retransmit_synack")
        .ok_or("this kernel has no tcp:tcp_retransmit_synack tracepoint (added in 4.15)")?;
    let field = |name: &str, size: u32| {
        fields
            .get(name)
            .filter(|f| f.size == size)
            .map(|f| f.offset)
            .ok_or(format!(
                "tcp:tcp_retransmit_synack has no {size}-byte `{name}` field"
            ))
    };
    offsets.tp_synack_skaddr = field("skaddr", 8)?;
    offsets.tp_synack_sport = field("sport", 2)?;
    offsets.tp_synack_dport = field("dport", 2)?;
    offsets.tp_synack_saddr_v6 = field("saddr_v6", 16)?;
    offsets.tp_synack_daddr_v6 = field("daddr_v6", 16)?;
    Ok(())
}

/// The per-CPU `struct linux_mib` of a namespace: where it is, which indices, and how the
/// programs find this CPU's copy (`struct bpf_array`'s per-CPU element pointers: see the
/// programs' `cpu_offset`; no kernel symbol needed).
fn resolve_mib(btf: &KernelBtf, offsets: &mut KernelOffsets) -> Result<(), String> {
    let btf_err = |e: BtfError| e.to_string();
    let pptrs = btf.member("bpf_array", "pptrs").map_err(btf_err)?;
    if pptrs.offset == 0 {
        return Err("struct bpf_array has its element pointers at offset 0".into());
    }
    offsets.bpf_array_pptrs = pptrs.offset;
    offsets.net_mib = btf
        .member_sized("net", "mib.net_statistics", 8)
        .map_err(btf_err)?;
    offsets.net_syncookies = btf
        .member("net", "ipv4.sysctl_tcp_syncookies")
        .map_err(btf_err)?
        .offset;
    offsets.net_syncookies_size =
        sysctl_size(btf, "ipv4.sysctl_tcp_syncookies").map_err(btf_err)?;
    offsets.net_max_syn_backlog = btf
        .member_sized("net", "ipv4.sysctl_max_syn_backlog", 4)
        .map_err(btf_err)?;
    let index = |name: &str| -> Result<u32, String> {
        let value = btf.enumerator(name).map_err(btf_err)?;
        u32::try_from(value).map_err(|_| format!("{name} = {value} is out of range"))
    };
    offsets.mib_listen_overflows = index("LINUX_MIB_LISTENOVERFLOWS")?;
    offsets.mib_listen_drops = index("LINUX_MIB_LISTENDROPS")?;
    offsets.mib_reqq_full_drop = index("LINUX_MIB_TCPREQQFULLDROP")?;
    offsets.mib_syncookies_sent = index("LINUX_MIB_SYNCOOKIESSENT")?;
    Ok(())
}

/// `(major, minor)` from `uname -r` (`/proc/sys/kernel/osrelease`).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_version(&release)
}

fn parse_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn versions_parse_from_distribution_releases() {
        assert_eq!(parse_version("6.1.0-50-cloud-amd64\n"), (6, 1));
        assert_eq!(parse_version("5.10.0-43-cloud-amd64"), (5, 10));
        assert_eq!(parse_version("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_version("garbage"), (0, 0));
    }

    /// A kernel between 5.17 and 6.10: kfree_skb has `reason` but no `rx_sk`.
    #[test]
    fn kfree_skb_without_rx_sk_is_refused_with_the_version() {
        let Ok(btf) = KernelBtf::open(Path::new("/sys/kernel/btf/vmlinux")) else {
            crate::util::skip_test("no kernel BTF");
            return;
        };
        let dir = std::env::temp_dir().join(format!("listendrop-tracefs-{}", std::process::id()));
        let event = dir.join("events/skb/kfree_skb");
        std::fs::create_dir_all(&event).unwrap();
        std::fs::write(
            event.join("format"),
            "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\
             \tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\
             \tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n",
        )
        .unwrap();
        let tracefs = Tracefs::at(&dir);
        let layout = Layout::resolve(&btf, Ok(&tracefs)).unwrap();
        let why = layout
            .allows(Needs::FreedAck, Kind::Tracepoint)
            .unwrap_err();
        // On a kernel before 6.15 the drop reason is missing first.
        assert!(
            (why.contains("rx_sk") && why.contains("6.11")) || why.contains("6.15"),
            "{why}"
        );
        let why = layout
            .allows(Needs::SynackRequest, Kind::Tracepoint)
            .unwrap_err();
        assert!(why.contains("tcp_retransmit_synack"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);

        let none = Layout::resolve(&btf, Err(crate::tracefs::NOT_MOUNTED)).unwrap();
        let why = none
            .allows(Needs::SynackRequest, Kind::Tracepoint)
            .unwrap_err();
        assert!(why.contains("mount -t tracefs"), "{why}");
        // The typed and raw programs read the arguments: no tracefs needed.
        assert_eq!(none.allows(Needs::SynackRequest, Kind::TpBtf), Ok(()));
    }
}
