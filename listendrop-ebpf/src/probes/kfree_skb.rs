//! `skb:kfree_skb`: ACK-time drops without kprobes or fentry.
//!
//! Kernel 6.15+ frees the final ACK (or first data) with
//! `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` whenever `tcp_check_req` got no child socket:
//! when the accept queue was full (ListenOverflows) but also when the child could not be
//! created or routed (ListenDrops only). `rx_sk` (6.11+) is the listener. The queue test
//! `sk_ack_backlog > sk_max_ack_backlog` — the kernel's own `sk_acceptq_is_full` — tells
//! the two apart: an overflow is `ack_accept_queue_full`, the rest `other`. (Only an
//! `accept()` landing between the kernel's test and this free, within the same
//! microsecond, makes an overflow look like `other`.)
//!
//! Three programs, best first: `tp_btf` (typed arguments, plain loads), `raw_tp`
//! (arguments, helper reads) and the classic tracepoint (a record the kernel fills first).
//! Attached only when no `syn_recv_sock` probe is, so nothing is counted twice.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use listendrop_common::{event::FLAG_RESET, Health, Reason};

use crate::{
    config::{off, value},
    health::bump,
    kernel::{self, Probed, Read, Typed},
    record,
};

/// Runs for every skb freed on the host (hundreds of thousands per second on busy hosts):
/// the reason test is the first and only work on the common path. The reason number is
/// the compare's immediate (patched in for the running kernel: `value!`), and the rest is
/// a subprogram of its own, so the common path touches no callee-saved register and no
/// stack: it costs what a filter compiled for one kernel costs.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
    //          struct sock *rx_sk) since 6.11. The enum arrives zero-extended to 64 bits:
    // compared whole, it needs no masking.
    let reason: u64 = ctx.arg(2);
    if reason != u64::from(value!(reason_tcp_listen_overflow)) {
        return 0;
    }
    listen_overflow::<Typed>(ctx.arg(3), ctx.arg(0));
    0
}

/// The same from the raw arguments, for kernels whose tp_btf attach fails.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb_raw(ctx: RawTracePointContext) -> u32 {
    let reason: u64 = ctx.arg(2);
    if reason != u64::from(value!(reason_tcp_listen_overflow)) {
        return 0;
    }
    listen_overflow::<Probed>(ctx.arg(3), ctx.arg(0));
    0
}

/// The same from the classic tracepoint's record (offsets from its format file).
#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset is inside this tracepoint's record (checked by the daemon).
    let reason: u32 = match unsafe { ctx.read_at(off!(tp_kfree_skb_reason)) } {
        Ok(reason) => reason,
        Err(_) => return 0,
    };
    if reason != value!(reason_tcp_listen_overflow) {
        return 0;
    }
    // SAFETY: as above.
    let args = unsafe {
        (
            ctx.read_at::<*const u8>(off!(tp_kfree_skb_rx_sk)),
            ctx.read_at::<*const u8>(off!(tp_kfree_skb_skbaddr)),
        )
    };
    if let (Ok(sk), Ok(skb)) = args {
        listen_overflow::<Probed>(sk, skb);
    }
    0
}

/// Counts one freed handshake packet of listener `sk` (NULL: none was recorded).
///
/// A BPF-to-BPF call (static: the verifier checks it with its caller's argument types, so
/// the BTF-typed pointers stay typed), which keeps its registers and stack off the common
/// path of the programs above.
#[inline(never)]
fn listen_overflow<R: Read>(sk: *const u8, skb: *const u8) {
    if sk.is_null() {
        bump(Health::NoListener);
        return;
    }
    let reason = match kernel::accept_queue::<R>(sk) {
        Ok((len, limit)) if len > limit => Reason::AckAcceptQueueFull,
        Ok(_) => Reason::Other,
        Err(_) => {
            bump(Health::Read);
            return;
        }
    };
    let Some(mut obs) = record::observe::<R>(sk, reason) else {
        return;
    };
    // tcp_check_req read the same sysctl a moment ago to choose between ignoring the ACK
    // and resetting the client.
    if reason == Reason::AckAcceptQueueFull && kernel::abort_on_overflow::<R>(obs.net) {
        obs.flags |= FLAG_RESET;
        record::count_only(&obs, Reason::OverflowReset);
    }
    let tuple = kernel::read_tuple::<R>(skb).ok();
    record::drop::<R>(&mut obs, tuple.as_ref());
}
