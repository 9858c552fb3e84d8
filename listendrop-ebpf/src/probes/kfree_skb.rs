//! `skb:kfree_skb` tracepoint: ACK-time accept-queue overflows without kprobes.
//!
//! Kernel 6.15+ frees the final ACK (or first data) of a handshake whose listener's accept
//! queue is full with `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`, set only at
//! `tcp_check_req: listen_overflow`; `rx_sk` (6.11+) is then the listener. Record offsets
//! come from the tracepoint's format file, the enum value from BTF. Attached only when no
//! `syn_recv_sock` probe is, so nothing is counted twice.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext as _};
use listendrop_common::{event::FLAG_RESET, Health, Reason};

use crate::{config::off, health::bump, kernel, maps, record};

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

/// The record layout of 6.11+ on 64-bit kernels (`skbaddr` 8, `rx_sk` 24, `reason` 36):
/// when the format file says exactly this, the daemon attaches this variant, which reads
/// the reason with one direct load instead of a helper call (the verifier allows constant
/// offsets into a tracepoint record, checked against its size at attach time).
pub const FIXED_REASON_OFFSET: usize = 36;

#[tracepoint]
pub fn kfree_skb_fixed(ctx: TracePointContext) -> u32 {
    // SAFETY: the daemon attaches this program only to a record whose `reason` is the u32
    // at FIXED_REASON_OFFSET; the kernel checks the offset is inside the record.
    let reason = unsafe {
        core::ptr::read_volatile(
            ctx.as_ptr()
                .cast::<u8>()
                .add(FIXED_REASON_OFFSET)
                .cast::<u32>(),
        )
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
        bump(Health::NoListener);
        return Ok(());
    }
    maps::high_water(sk);
    // SAFETY: as above.
    let skb: *const u8 = unsafe { ctx.read_at(off!(tp_kfree_skb_skbaddr))? };
    let Some(mut obs) = record::observe(sk, Reason::AckAcceptQueueFull) else {
        return Ok(());
    };
    // tcp_check_req read the same sysctl a moment ago to choose between ignoring the ACK
    // and resetting the client.
    if kernel::abort_on_overflow(obs.net) {
        obs.event.flags |= FLAG_RESET;
        record::count_only(&obs, Reason::OverflowReset);
    }
    let tuple_ok = kernel::read_tuple(skb, &mut obs.event).is_ok();
    record::drop(&mut obs, tuple_ok);
    Ok(())
}
