//! The kernel layout the daemon resolved for this boot (see `listendrop_common::config`).

use listendrop_common::KernelOffsets;

/// Overwritten by the daemon before load (`EbpfLoader::override_global`). It lands in
/// `.rodata`, which aya freezes, so the verifier sees each field as a known constant.
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
    tp_kfree_skb_skbaddr: 0,
    tp_kfree_skb_rx_sk: 0,
    tp_kfree_skb_reason: 0,
    reason_tcp_listen_overflow: 0,
    sk_family: 0,
    sk_num: 0,
    sk_rcv_saddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_net: 0,
    net_ns_inum: 0,
    sk_ack_backlog: 0,
    sk_max_ack_backlog: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    _pad: 0,
};

/// Reads one field of [`OFFSETS`]. The volatile read keeps the compiler from folding the
/// zero initialiser into the code.
#[inline(always)]
pub(crate) fn load(field: *const u32) -> usize {
    // SAFETY: `field` points into `OFFSETS`, an aligned static that lives forever.
    (unsafe { core::ptr::read_volatile(field) }) as usize
}

/// One field of [`OFFSETS`] as `usize`.
macro_rules! off {
    ($field:ident) => {
        $crate::config::load(&raw const $crate::config::OFFSETS.$field)
    };
}
pub(crate) use off;
