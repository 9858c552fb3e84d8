//! `tcp_conn_request(rsk_ops, af_ops, sk, skb)` (global, same prototype 4.x–6.18): every
//! SYN a listener accepts for processing, IPv4 and IPv6 (and IPv4 on IPv6 sockets) alike.
//!
//! The function returns 0 whether it dropped the SYN or not, so the drop and its class
//! come from the kernel's own per-CPU counters of the listener's namespace, read at entry
//! and at return: `tcp_syn_flood_action` refusing the SYN bumps TCPReqQFullDrop (whether
//! or not the compiler inlined it), a full accept queue ListenOverflows, every drop
//! ListenDrops, a syncookie SYN-ACK SyncookiesSent.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use listendrop_common::Reason;

use crate::{
    calls::{self, CallState, SLOT_CONN_REQUEST},
    config::{idx, off},
    kernel::{self, Probed, Typed},
    maps, record,
};

#[kprobe]
pub fn conn_request_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(skb)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(3)) else {
        return 0;
    };
    maps::high_water::<Probed>(sk as *const u8);
    calls::enter(SLOT_CONN_REQUEST, sk, skb, 0, 0);
    0
}

#[kretprobe]
pub fn conn_request_kretprobe(_ctx: RetProbeContext) -> u32 {
    returned();
    0
}

#[fentry(function = "tcp_conn_request")]
pub fn conn_request_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(2);
    maps::high_water::<Typed>(sk as *const u8);
    calls::enter(SLOT_CONN_REQUEST, sk, ctx.arg(3), 0, 0);
    0
}

#[fexit(function = "tcp_conn_request")]
pub fn conn_request_fexit(_ctx: FExitContext) -> u32 {
    returned();
    0
}

#[inline(always)]
fn returned() {
    if let Some(call) = calls::exit(SLOT_CONN_REQUEST) {
        classify(&call);
    }
}

#[inline(always)]
fn classify(call: &CallState) {
    let Some(delta) = calls::mib_delta(call) else {
        return;
    };
    let sk = call.sk as *const u8;
    let syncookie = delta.syncookies_sent != 0;
    let reason = if delta.reqq_full_drop != 0 {
        Reason::SynQueueFull
    } else if delta.listen_overflows != 0 {
        Reason::SynAcceptQueueFull
    } else if delta.listen_drops != 0 {
        if backlog_pressure(sk) {
            Reason::SynBacklogPressure
        } else {
            Reason::Other
        }
    } else if syncookie {
        Reason::SyncookieSent
    } else {
        return;
    };
    // The return side has no typed pointer (the entry state holds plain numbers).
    let Some(mut obs) = record::observe::<Probed>(sk, reason) else {
        return;
    };
    if syncookie {
        // Only SyncookiesSent moved, or a cookie went out and the SYN was still dropped
        // later (not seen on any kernel, but the count must follow SyncookiesSent).
        record::count_only(&obs, Reason::SyncookieSent);
    }
    if reason == Reason::SyncookieSent {
        return;
    }
    let tuple = kernel::read_tuple::<Probed>(call.skb as *const u8).ok();
    record::drop::<Probed>(&mut obs, tuple.as_ref());
}

/// `tcp_conn_request`'s own test for its last-quarter rule: syncookies off and fewer than
/// a quarter of `tcp_max_syn_backlog` slots left in the SYN queue.
#[inline(always)]
fn backlog_pressure(sk: *const u8) -> bool {
    let Ok(net) = kernel::net_of::<Probed>(sk) else {
        return false;
    };
    let cookies =
        kernel::read_sysctl::<Probed, { idx!(net_syncookies) }>(net, off!(net_syncookies_size));
    let max = kernel::read::<i32>(net, off!(net_max_syn_backlog));
    let qlen = kernel::read::<i32>(sk, off!(icsk_syn_qlen));
    match (cookies, max, qlen) {
        (Ok(0), Ok(max), Ok(qlen)) => max - qlen < (max >> 2),
        _ => false,
    }
}
