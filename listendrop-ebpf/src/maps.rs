//! Maps shared with the daemon. Their names are the `MAP_*` constants of
//! `listendrop_common`; sizes are defaults the daemon may override before load.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use listendrop_common::{
    ListenerKey, COUNTERS_LEN, DEFAULT_EVENTS_BYTES, DEFAULT_MAX_LISTENER_KEYS,
};

/// Dropped packets per listener and reason: exact, never sampled. Per-CPU so the hot path
/// needs no atomics (5.10 rejects BPF atomics with fetch); the daemon sums the CPUs.
/// Preallocated (no BPF_F_NO_PREALLOC) so that counting never allocates in softirq.
#[map]
static DROPS: PerCpuHashMap<ListenerKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_LISTENER_KEYS, 0);

/// One record per dropped handshake (`listendrop_common::DropEvent`). May overflow under
/// load: every record that does not fit is counted in `COUNTERS[COUNTER_EVENTS_LOST]`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_EVENTS_BYTES, 0);

/// Health counters, indexed by the `COUNTER_*` constants.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Adds one to the health counter `index`.
#[inline(always)]
pub(crate) fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; programs on one CPU do not nest (the kernel skips a
        // tracepoint program that fires while another runs on the same CPU).
        unsafe { *slot += 1 };
    }
}

/// Adds one to the drop counter of `key`, creating it on first use.
#[inline(always)]
pub(crate) fn count_drop(key: &ListenerKey) {
    if let Some(slot) = DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of an existing element; see `bump`.
        unsafe { *slot += 1 };
        return;
    }
    // BPF_ANY: if another CPU created the key since our lookup, the update only sets this
    // CPU's slot of that element, so no count is lost. Fails only when the map is full.
    if DROPS.insert(key, 1u64, 0).is_err() {
        bump(listendrop_common::COUNTER_DROPS_MAP_FULL);
    }
}

/// Reserves a ring-buffer record, or counts it as lost.
#[inline(always)]
pub(crate) fn reserve_event(
) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<listendrop_common::DropEvent>> {
    let entry = EVENTS.reserve::<listendrop_common::DropEvent>(0);
    if entry.is_none() {
        bump(listendrop_common::COUNTER_EVENTS_LOST);
    }
    entry
}
