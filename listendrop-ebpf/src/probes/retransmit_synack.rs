//! `tcp:tcp_retransmit_synack(sk, req)` (4.15+): a listener resends a SYN-ACK. For a
//! handshake whose final ACK was dropped, that is the moment the client believes it is
//! connected while the server never accepted it.
//!
//! Three programs, best first: `tp_btf` (typed arguments, plain loads), `raw_tp`
//! (arguments, helper reads) and the classic tracepoint (its record's addresses).

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use listendrop_common::{Addr, Reason, AF_INET, AF_INET6};

use crate::{
    config::off,
    kernel::{self, Probed, Read, Tuple, Typed},
    record,
};

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn retransmit_synack_btf(ctx: BtfTracePointContext) -> u32 {
    from_request::<Typed>(ctx.arg(0), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn retransmit_synack_raw(ctx: RawTracePointContext) -> u32 {
    from_request::<Probed>(ctx.arg(0), ctx.arg(1));
    0
}

/// The listener `sk` and the request `req` of the retransmitted SYN-ACK.
#[inline(always)]
fn from_request<R: Read>(sk: *const u8, req: *const u8) {
    // A Fast Open SYN-ACK retransmit carries the child socket, not a listener.
    if sk.is_null() || req.is_null() || !kernel::is_listener::<R>(sk) {
        return;
    }
    let Some(mut obs) = record::observe::<R>(sk, Reason::SynackRetransmit) else {
        return;
    };
    if let Ok(tuple) = kernel::read_request_tuple::<R>(req) {
        record::synack_retransmit::<R>(&mut obs, &tuple);
    }
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit_synack(&ctx);
    0
}

#[inline(always)]
fn try_retransmit_synack(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY (all reads): offsets inside the record, from its format file.
    let sk: *const u8 = unsafe { ctx.read_at(off!(tp_synack_skaddr))? };
    if !kernel::is_listener::<Probed>(sk) {
        return Ok(());
    }
    let Some(mut obs) = record::observe::<Probed>(sk, Reason::SynackRetransmit) else {
        return Ok(());
    };
    // The record's addresses are the server's (s*) and the client's (d*). The v6 fields
    // hold IPv4 as ::ffff:a.b.c.d on every kernel, so they alone give both families.
    let server: [u32; 4] = unsafe { ctx.read_at(off!(tp_synack_saddr_v6))? };
    let client: [u32; 4] = unsafe { ctx.read_at(off!(tp_synack_daddr_v6))? };
    let (saddr, daddr, family) = if is_v4_mapped(&client) {
        (Addr::v4(client[3]), Addr::v4(server[3]), AF_INET)
    } else {
        (Addr(client), Addr(server), AF_INET6)
    };
    let tuple = Tuple {
        saddr,
        daddr,
        sport: unsafe { ctx.read_at(off!(tp_synack_dport))? },
        dport: unsafe { ctx.read_at(off!(tp_synack_sport))? },
        family,
    };
    record::synack_retransmit::<Probed>(&mut obs, &tuple);
    Ok(())
}

/// `::ffff:a.b.c.d`, as words in network order.
#[inline(always)]
fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == 0xffff_u32.to_be()
}
