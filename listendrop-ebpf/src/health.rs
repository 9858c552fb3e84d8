//! The programs' health counters ([`Health`]): one per-CPU slot each.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use listendrop_common::Health;

/// Health counters, indexed by [`Health::index`].
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Health::COUNT, 0);

/// Adds one to the health counter `counter`.
#[inline(always)]
pub(crate) fn bump(counter: Health) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: a per-CPU slot; programs on one CPU do not nest (the kernel skips a
        // program that fires while another runs on the same CPU).
        unsafe { *slot += 1 };
    }
}
