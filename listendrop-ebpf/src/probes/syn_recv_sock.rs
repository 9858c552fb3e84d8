//! `tcp_v4_syn_recv_sock` / `tcp_v6_syn_recv_sock(sk, skb, req, dst, req_unhash,
//! own_req[, opt_child_init])`: the child socket is created when a handshake completes;
//! NULL with ListenOverflows moved means the accept queue was full.
//!
//! Who called is told by the arguments (all kernels 4.4–6.18): `tcp_check_req` passes
//! `dst == NULL, req_unhash == req`; the syncookie path (`tcp_get_cookie_sock`) a route and
//! no `req_unhash`; TCP Fast Open both NULL, from inside `tcp_conn_request` (whose probe
//! counts it). An IPv4 handshake on an IPv6 socket runs the v6 function, which calls the
//! v4 one: only the outer call counts. Only arguments 0–4 are read, so the 7th argument
//! added in 2026 (6.1.188+, 6.12.110+) changes nothing here.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use listendrop_common::{event::FLAG_RESET, Reason};

use crate::{
    calls::{self, CallState, SLOT_CONN_REQUEST, SLOT_SYN_RECV_SOCK},
    kernel::{self, Probed, Typed},
    maps, record,
};

#[kprobe]
pub fn syn_recv_sock_kprobe(ctx: ProbeContext) -> u32 {
    let args = (
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(3),
        ctx.arg::<u64>(4),
    );
    if let (Some(sk), Some(skb), Some(dst), Some(req_unhash)) = args {
        maps::high_water::<Probed>(sk as *const u8);
        calls::enter(SLOT_SYN_RECV_SOCK, sk, skb, dst, req_unhash);
    }
    0
}

#[kretprobe]
pub fn syn_recv_sock_kretprobe(_ctx: RetProbeContext) -> u32 {
    returned();
    0
}

#[fentry(function = "tcp_v4_syn_recv_sock")]
pub fn syn_recv_sock_v4_fentry(ctx: FEntryContext) -> u32 {
    entered(&ctx);
    0
}

#[fexit(function = "tcp_v4_syn_recv_sock")]
pub fn syn_recv_sock_v4_fexit(_ctx: FExitContext) -> u32 {
    returned();
    0
}

#[fentry(function = "tcp_v6_syn_recv_sock")]
pub fn syn_recv_sock_v6_fentry(ctx: FEntryContext) -> u32 {
    entered(&ctx);
    0
}

#[fexit(function = "tcp_v6_syn_recv_sock")]
pub fn syn_recv_sock_v6_fexit(_ctx: FExitContext) -> u32 {
    returned();
    0
}

#[inline(always)]
fn entered(ctx: &FEntryContext) {
    let sk: u64 = ctx.arg(0);
    maps::high_water::<Typed>(sk as *const u8);
    calls::enter(SLOT_SYN_RECV_SOCK, sk, ctx.arg(1), ctx.arg(3), ctx.arg(4));
}

#[inline(always)]
fn returned() {
    if let Some(call) = calls::exit(SLOT_SYN_RECV_SOCK) {
        // Fast Open child creation runs inside tcp_conn_request, which counts it.
        if !calls::active(SLOT_CONN_REQUEST, call.skb) {
            classify(&call);
        }
    }
}

#[inline(always)]
fn classify(call: &CallState) {
    let Some(delta) = calls::mib_delta(call) else {
        return;
    };
    let reason = if delta.listen_overflows != 0 {
        if call.dst != 0 {
            Reason::CookieAckAcceptQueueFull
        } else if call.req_unhash != 0 {
            Reason::AckAcceptQueueFull
        } else {
            Reason::Other
        }
    } else if delta.listen_drops != 0 {
        Reason::Other
    } else {
        return;
    };
    let sk = call.sk as *const u8;
    let Some(mut obs) = record::observe::<Probed>(sk, reason) else {
        return;
    };
    // tcp_check_req reads this sysctl right after we return to choose between ignoring
    // the ACK and resetting the client (EmbryonicRsts).
    if reason == Reason::AckAcceptQueueFull && kernel::abort_on_overflow::<Probed>(obs.net) {
        obs.flags |= FLAG_RESET;
        record::count_only(&obs, Reason::OverflowReset);
    }
    let tuple = kernel::read_tuple::<Probed>(call.skb as *const u8).ok();
    record::drop::<Probed>(&mut obs, tuple.as_ref());
}
