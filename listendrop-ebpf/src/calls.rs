//! Entry-to-return state of the hooked kernel functions, kept per CPU.
//!
//! `tcp_conn_request` and `syn_recv_sock` run in softirq context (listeners are lockless
//! since 4.4, never backlogged), so on one CPU a call runs to its return without another
//! call of the same function interleaving — except the IPv4-mapped case, where
//! `tcp_v6_syn_recv_sock` calls `tcp_v4_syn_recv_sock`: `depth` makes the outer call the
//! only one that counts.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use listendrop_common::{COUNTER_READ_ERRORS, COUNTER_STALE_CALLS};

use crate::{
    kernel::{self, Mib},
    maps::{bump, CALLS},
};

/// Slot of `tcp_conn_request` in `CALLS`.
pub(crate) const SLOT_CONN_REQUEST: u32 = 0;
/// Slot of `tcp_v4_syn_recv_sock` / `tcp_v6_syn_recv_sock` in `CALLS`.
pub(crate) const SLOT_SYN_RECV_SOCK: u32 = 1;

/// A call older than this when another begins lost its return probe (kretprobe
/// instances exhausted): start afresh instead of treating the new call as nested.
const STALE_NS: u64 = 100_000_000;

/// What the entry probe saw.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CallState {
    pub start_ns: u64,
    pub sk: u64,
    pub skb: u64,
    pub dst: u64,
    pub req_unhash: u64,
    pub mib: Mib,
    pub depth: u32,
    /// 1 when `mib` was read; without it no delta can be taken.
    pub mib_ok: u32,
}

/// Records the entry of a call. Nested calls only deepen the outer one.
#[inline(always)]
pub(crate) fn enter(slot: u32, sk: u64, skb: u64, dst: u64, req_unhash: u64) {
    let Some(state) = CALLS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: the helper returns a valid pointer to this CPU's element.
    let state = unsafe { &mut *state };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if state.depth > 0 {
        if now.wrapping_sub(state.start_ns) < STALE_NS {
            state.depth += 1;
            return;
        }
        bump(COUNTER_STALE_CALLS);
    }
    let mib = kernel::net_of(sk as *const u8).and_then(kernel::read_mib);
    *state = CallState {
        start_ns: now,
        sk,
        skb,
        dst,
        req_unhash,
        mib: mib.unwrap_or_default(),
        depth: 1,
        mib_ok: u32::from(mib.is_ok()),
    };
}

/// Records the return of a call: the entry state when the outermost call returns.
#[inline(always)]
pub(crate) fn exit(slot: u32) -> Option<CallState> {
    let state = CALLS.get_ptr_mut(slot)?;
    // SAFETY: the helper returns a valid pointer to this CPU's element.
    let state = unsafe { &mut *state };
    if state.depth == 0 {
        // Attached while the call was running: no entry state.
        return None;
    }
    state.depth -= 1;
    if state.depth == 0 {
        Some(*state)
    } else {
        None
    }
}

/// Whether `slot` has a call in progress on this CPU (a stale one does not count).
#[inline(always)]
pub(crate) fn active(slot: u32) -> bool {
    let Some(state) = CALLS.get_ptr(slot) else {
        return false;
    };
    // SAFETY: the helper returns a valid pointer to this CPU's element.
    let (depth, start) = unsafe { ((*state).depth, (*state).start_ns) };
    // SAFETY: a helper without preconditions.
    depth > 0 && unsafe { bpf_ktime_get_ns() }.wrapping_sub(start) < STALE_NS
}

/// How much each MIB counter of the call's namespace moved during the call, on this CPU.
#[inline(always)]
pub(crate) fn mib_delta(call: &CallState) -> Option<Mib> {
    if call.mib_ok == 0 {
        bump(COUNTER_READ_ERRORS);
        return None;
    }
    let before = &call.mib;
    let Ok(now) = kernel::net_of(call.sk as *const u8).and_then(kernel::read_mib) else {
        bump(COUNTER_READ_ERRORS);
        return None;
    };
    Some(Mib {
        listen_overflows: now.listen_overflows.wrapping_sub(before.listen_overflows),
        listen_drops: now.listen_drops.wrapping_sub(before.listen_drops),
        reqq_full_drop: now.reqq_full_drop.wrapping_sub(before.reqq_full_drop),
        syncookies_sent: now.syncookies_sent.wrapping_sub(before.syncookies_sent),
    })
}
