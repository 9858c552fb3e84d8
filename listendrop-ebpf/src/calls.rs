//! Entry-to-return state of the hooked kernel functions, kept per CPU.
//!
//! `tcp_conn_request` and `syn_recv_sock` run in softirq context (listeners are lockless
//! since 4.4, never backlogged), so on one CPU a call runs to its return without another
//! call of the same function interleaving — except the IPv4-mapped case, where
//! `tcp_v6_syn_recv_sock` calls `tcp_v4_syn_recv_sock`: `depth` makes the outer call the
//! only one that counts.
//!
//! A return probe can be missed (kretprobe instances exhausted, a program skipped while
//! another runs on the CPU): the entry state then stays behind. The next call recognises
//! it at once — a nested call has the outer call's socket and packet, a new call has
//! others — and starts afresh, counting [`Health::StaleCall`]; nothing waits for a timeout.

use aya_ebpf::{helpers::generated::bpf_jiffies64, macros::map, maps::PerCpuArray};
use listendrop_common::Health;

use crate::{
    config::{load64, SETTINGS},
    health::bump,
    kernel::{self, Mib, Probed},
};

/// Slot of `tcp_conn_request` in `CALLS`.
pub(crate) const SLOT_CONN_REQUEST: u32 = 0;
/// Slot of `tcp_v4_syn_recv_sock` / `tcp_v6_syn_recv_sock` in `CALLS`.
pub(crate) const SLOT_SYN_RECV_SOCK: u32 = 1;

/// State of the hooked call in progress on this CPU, from entry to return (`SLOT_*`).
#[map]
static CALLS: PerCpuArray<CallState> = PerCpuArray::with_max_entries(2, 0);

/// What the entry probe saw.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CallState {
    /// `jiffies` at entry.
    pub start_tick: u64,
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
    // SAFETY: a helper without preconditions (5.5+), one load of `jiffies` once the
    // verifier has inlined it.
    let now = unsafe { bpf_jiffies64() };
    if state.depth > 0 {
        // `NESTED_CALL_NS` in ticks (listendrop_common).
        let nested = state.sk == sk
            && state.skb == skb
            && now.wrapping_sub(state.start_tick) <= load64(&raw const SETTINGS.nested_ticks);
        if nested {
            state.depth += 1;
            return;
        }
        bump(Health::StaleCall);
    }
    let mib = kernel::net_of::<Probed>(sk as *const u8).and_then(kernel::read_mib);
    *state = CallState {
        start_tick: now,
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

/// Whether `slot` has a call in progress on this CPU for packet `skb` (a stale state left
/// by another packet does not count).
#[inline(always)]
pub(crate) fn active(slot: u32, skb: u64) -> bool {
    let Some(state) = CALLS.get_ptr(slot) else {
        return false;
    };
    // SAFETY: the helper returns a valid pointer to this CPU's element.
    let (depth, call_skb) = unsafe { ((*state).depth, (*state).skb) };
    depth > 0 && call_skb == skb
}

/// How much each MIB counter of the call's namespace moved during the call, on this CPU.
#[inline(always)]
pub(crate) fn mib_delta(call: &CallState) -> Option<Mib> {
    if call.mib_ok == 0 {
        bump(Health::Read);
        return None;
    }
    let before = &call.mib;
    let Ok(now) = kernel::net_of::<Probed>(call.sk as *const u8).and_then(kernel::read_mib) else {
        bump(Health::Read);
        return None;
    };
    Some(Mib {
        listen_overflows: now.listen_overflows.wrapping_sub(before.listen_overflows),
        listen_drops: now.listen_drops.wrapping_sub(before.listen_drops),
        reqq_full_drop: now.reqq_full_drop.wrapping_sub(before.reqq_full_drop),
        syncookies_sent: now.syncookies_sent.wrapping_sub(before.syncookies_sent),
    })
}
