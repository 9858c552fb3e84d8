//! `skb:kfree_skb` tracepoint: ACK-time accept-queue overflows.
//!
//! Kernel 6.15+ frees the final ACK (or first data) of a handshake whose listener's accept
//! queue is full with `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`, set only at
//! `tcp_check_req: listen_overflow`. `rx_sk` (6.11+) is then the listener. Record offsets
//! come from the tracepoint's format file, the enum value from BTF.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use listendrop_common::{DropEvent, ListenerKey, Reason, COUNTER_NO_LISTENER};

use crate::{config::off, kernel, maps};

/// Runs for every skb freed on the host (hundreds of thousands per second on busy hosts):
/// the reason test is the first and only work on the common path.
#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset is inside this tracepoint's record (checked by the daemon).
    let reason: u32 = match unsafe { ctx.read_at(off!(tp_kfree_skb_reason)) } {
        Ok(reason) => reason,
        Err(_) => return 0,
    };
    if reason as usize != off!(reason_tcp_listen_overflow) {
        return 0;
    }
    let _ = try_listen_overflow(&ctx);
    0
}

#[inline(always)]
fn try_listen_overflow(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: offsets inside the record, as above.
    let sk: *const u8 = unsafe { ctx.read_at(off!(tp_kfree_skb_rx_sk))? };
    if sk.is_null() {
        maps::bump(COUNTER_NO_LISTENER);
        return Ok(());
    }
    // SAFETY: as above.
    let skb: *const u8 = unsafe { ctx.read_at(off!(tp_kfree_skb_skbaddr))? };

    let mut key = ListenerKey::ZERO;
    key.reason = Reason::AckAcceptQueueFull as u32;
    let (queue_len, queue_max) = kernel::read_listener(sk, &mut key)?;
    maps::count_drop(&key);

    let Some(mut entry) = maps::reserve_event() else {
        return Ok(());
    };
    let mut event = DropEvent::ZERO;
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    event.listener = key;
    event.accept_queue_len = queue_len;
    event.accept_queue_max = queue_max;
    if kernel::read_tuple(skb, &mut event).is_err() {
        // The drop is counted; an event without its 4-tuple would mislead.
        entry.discard(0);
        maps::bump(listendrop_common::COUNTER_EVENTS_LOST);
        return Ok(());
    }
    entry.write(event);
    entry.submit(0);
    Ok(())
}
