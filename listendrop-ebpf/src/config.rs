//! The kernel layout and settings the daemon resolved for this boot
//! (see `listendrop_common::config`).

use listendrop_common::{KernelOffsets, Settings};

/// Overwritten by the daemon before load (`EbpfLoader::override_global`). It lands in
/// `.rodata`, which aya freezes, so the verifier sees each field as a known constant.
/// Programs reading through untyped pointers take offsets from here; BTF-typed ones have
/// them patched into their load instructions (`kernel::field!`, `value!`).
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
    bpf_array_pptrs: 0,
    tp_kfree_skb_skbaddr: 0,
    tp_kfree_skb_rx_sk: 0,
    tp_kfree_skb_reason: 0,
    reason_tcp_listen_overflow: 0,
    tp_synack_skaddr: 0,
    tp_synack_sport: 0,
    tp_synack_dport: 0,
    tp_synack_saddr_v6: 0,
    tp_synack_daddr_v6: 0,
    sk_family: 0,
    sk_state: 0,
    sk_num: 0,
    sk_rcv_saddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_daddr: 0,
    sk_dport: 0,
    sk_v6_daddr: 0,
    sk_net: 0,
    sk_cookie: 0,
    sk_ack_backlog: 0,
    sk_max_ack_backlog: 0,
    icsk_syn_qlen: 0,
    net_ns_inum: 0,
    net_mib: 0,
    net_syncookies: 0,
    net_syncookies_size: 0,
    net_max_syn_backlog: 0,
    net_abort_on_overflow: 0,
    net_abort_on_overflow_size: 0,
    mib_listen_overflows: 0,
    mib_listen_drops: 0,
    mib_reqq_full_drop: 0,
    mib_syncookies_sent: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_protocol: 0,
    packet_loads: 0,
};

/// Overwritten by the daemon before load, like [`OFFSETS`].
#[unsafe(no_mangle)]
pub(crate) static SETTINGS: Settings = Settings {
    episode_gap_ticks: 0,
    window_ticks: 0,
    sync_ticks: 0,
    nested_ticks: 0,
    events_per_sec: 0,
    _pad: 0,
};

/// Reads one `u32` field of a frozen global. The volatile read keeps the compiler from
/// folding the zero initialiser into the code.
#[inline(always)]
pub(crate) fn load(field: *const u32) -> usize {
    // SAFETY: `field` points into a static that lives forever, aligned for u32.
    (unsafe { core::ptr::read_volatile(field) }) as usize
}

/// Reads one `u64` field of a frozen global.
#[inline(always)]
pub(crate) fn load64(field: *const u64) -> u64 {
    // SAFETY: `field` points into a static that lives forever, aligned for u64.
    unsafe { core::ptr::read_volatile(field) }
}

/// Field `index` of [`OFFSETS`] (see [`idx`]) as `usize`.
#[inline(always)]
pub(crate) fn offset(index: usize) -> usize {
    load((&raw const OFFSETS).cast::<u32>().wrapping_add(index))
}

/// The index of a field of [`OFFSETS`], a constant ([`listendrop_common::FieldMark`]).
macro_rules! idx {
    ($field:ident) => {
        core::mem::offset_of!(listendrop_common::KernelOffsets, $field) / 4
    };
}
pub(crate) use idx;

/// A `u32` field of [`OFFSETS`] as an instruction's immediate: a
/// [`listendrop_common::ValueMark`] the daemon replaces with the value before load. For a
/// value compared on a hot path, where a `.rodata` load would cost a load and a register.
macro_rules! value {
    ($field:ident) => {
        (const {
            listendrop_common::ValueMark {
                field: $crate::config::idx!($field),
            }
            .imm()
        } as u32)
    };
}
pub(crate) use value;

/// One `u32` field of [`OFFSETS`] as `usize`.
macro_rules! off {
    ($field:ident) => {
        $crate::config::load(&raw const $crate::config::OFFSETS.$field)
    };
}
pub(crate) use off;
