//! Kernel layout facts the eBPF programs need, resolved by the daemon at start from the
//! running kernel's BTF and tracepoint format files and handed over as a read-only global.
//!
//! rustc emits no CO-RE relocations, so the programs cannot carry offsets for one kernel
//! baked in: every offset here is a byte offset read from `/sys/kernel/btf/vmlinux` or
//! `/sys/kernel/tracing/events/*/*/format` of the kernel the daemon runs on.

/// Byte offsets and enum values for the running kernel. All fields are `u32` so the
/// struct has no padding and the same layout on both sides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `skb:kfree_skb` record: offset of `skbaddr` (all kernels).
    pub tp_kfree_skb_skbaddr: u32,
    /// `skb:kfree_skb` record: offset of `rx_sk` (6.11+).
    pub tp_kfree_skb_rx_sk: u32,
    /// `skb:kfree_skb` record: offset of `reason` (5.17+, backported to 5.15).
    pub tp_kfree_skb_reason: u32,
    /// `enum skb_drop_reason` value of `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` (6.15+).
    pub reason_tcp_listen_overflow: u32,

    /// `struct sock`: `__sk_common.skc_family` (u16).
    pub sk_family: u32,
    /// `struct sock`: `__sk_common.skc_num` (u16, host order).
    pub sk_num: u32,
    /// `struct sock`: `__sk_common.skc_rcv_saddr` (u32, network order).
    pub sk_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_net` (`possible_net_t`, a `struct net *`).
    pub sk_net: u32,
    /// `struct net`: `ns.inum` (u32).
    pub net_ns_inum: u32,
    /// `struct sock`: `sk_ack_backlog` (u32).
    pub sk_ack_backlog: u32,
    /// `struct sock`: `sk_max_ack_backlog` (u32).
    pub sk_max_ack_backlog: u32,

    /// `struct sk_buff`: `head` (pointer).
    pub skb_head: u32,
    /// `struct sk_buff`: `network_header` (u16, offset from `head`).
    pub skb_network_header: u32,
    /// `struct sk_buff`: `transport_header` (u16, offset from `head`).
    pub skb_transport_header: u32,
    /// Explicit padding (always zero).
    pub _pad: u32,
}
