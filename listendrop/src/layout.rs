//! The kernel layout the programs need, resolved for the running kernel, and which hooks
//! that layout allows.

use listendrop_common::KernelOffsets;

use crate::{
    btf::{BtfError, KernelBtf},
    tracefs::Tracefs,
};

/// Offsets for the programs, and whether the `skb:kfree_skb` hook can run here.
pub struct Layout {
    /// Everything the programs read.
    pub offsets: KernelOffsets,
    /// `Ok` when `skb:kfree_skb` can report ACK-time overflows on this kernel, otherwise
    /// why not (a sentence naming the kernel version or the fix).
    pub kfree_skb: Result<(), String>,
}

impl Layout {
    /// Resolves the layout. Fails only when the socket and packet fields every hook reads
    /// are missing; a hook-specific gap lands in that hook's field.
    pub fn resolve(btf: &KernelBtf, tracefs: Option<&Tracefs>) -> Result<Self, BtfError> {
        let ptr = std::mem::size_of::<usize>();
        let mut offsets = KernelOffsets {
            sk_family: btf.member_sized("sock", "__sk_common.skc_family", 2)?,
            sk_num: btf.member_sized("sock", "__sk_common.skc_num", 2)?,
            sk_rcv_saddr: btf.member_sized("sock", "__sk_common.skc_rcv_saddr", 4)?,
            sk_v6_rcv_saddr: btf.member_sized("sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
            // possible_net_t { struct net *net; } (a pointer-sized struct, all kernels).
            sk_net: btf.member_sized("sock", "__sk_common.skc_net", ptr)?,
            net_ns_inum: btf.member_sized("net", "ns.inum", 4)?,
            sk_ack_backlog: btf.member_sized("sock", "sk_ack_backlog", 4)?,
            sk_max_ack_backlog: btf.member_sized("sock", "sk_max_ack_backlog", 4)?,
            skb_head: btf.member_sized("sk_buff", "head", ptr)?,
            skb_network_header: btf.member_sized("sk_buff", "network_header", 2)?,
            skb_transport_header: btf.member_sized("sk_buff", "transport_header", 2)?,
            ..KernelOffsets::default()
        };
        let kfree_skb = resolve_kfree_skb(btf, tracefs, &mut offsets);
        Ok(Self { offsets, kfree_skb })
    }
}

fn resolve_kfree_skb(
    btf: &KernelBtf,
    tracefs: Option<&Tracefs>,
    offsets: &mut KernelOffsets,
) -> Result<(), String> {
    let tracefs = tracefs.ok_or(
        "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` \
         (or add it to /etc/fstab)",
    )?;
    let fields = tracefs
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
