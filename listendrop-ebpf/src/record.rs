//! Turning one observation into counts and (maybe) an event: the path every hook shares.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE},
    DropEvent, HandshakeKey, HandshakeState, ListenerKey, RateState, Reason, COUNTER_EVENTS_LOST,
    COUNTER_EVENTS_RATE_LIMITED, COUNTER_READ_ERRORS,
};

use crate::{
    config::SETTINGS,
    kernel,
    maps::{self, bump, EVENTS, HANDSHAKES, RATE},
};

/// One second, the rate-limit window.
const WINDOW_NS: u64 = 1_000_000_000;

/// Starts an observation of listener `sk` for `reason`: the listener and its queues.
#[inline(always)]
pub(crate) fn observe(sk: *const u8, reason: Reason) -> Option<DropEvent> {
    let mut event = DropEvent::ZERO;
    if kernel::read_listener(sk, &mut event).is_err() {
        bump(COUNTER_READ_ERRORS);
        return None;
    }
    event.listener.reason = reason as u32;
    // SAFETY: a helper without preconditions.
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    Some(event)
}

/// Counts a drop whose 4-tuple is in `event` (`tuple_ok` false when it could not be read:
/// the packet still counts, as a new handshake, and no event is sent).
#[inline(always)]
pub(crate) fn drop(event: &mut DropEvent, tuple_ok: bool) {
    let new_handshake = !tuple_ok || remember(event);
    if new_handshake {
        event.flags |= FLAG_NEW_HANDSHAKE;
    }
    maps::count(&event.listener, new_handshake);
    if tuple_ok {
        emit(event);
    } else {
        bump(COUNTER_READ_ERRORS);
    }
}

/// Counts a non-drop event under `reason` on the listener of `event` (no handshake, no
/// event record).
#[inline(always)]
pub(crate) fn count_only(event: &DropEvent, reason: Reason) {
    let mut key = event.listener;
    key.reason = reason as u32;
    maps::count(&key, false);
}

/// Counts a SYN-ACK retransmit; when its handshake's ACK was dropped, reports it: the
/// client believes it is connected.
#[inline(always)]
pub(crate) fn synack_retransmit(event: &mut DropEvent) {
    maps::count(&event.listener, false);
    let key = handshake_key(event);
    // SAFETY: the value is copied out at once; a concurrent update can at worst make the
    // reason stale, which only affects this one event's flag.
    let Some(state) = (unsafe { HANDSHAKES.get(&key) }) else {
        return;
    };
    let acked = Reason::from_u32(state.reason).is_some_and(Reason::is_ack_time);
    if acked {
        event.flags |= FLAG_CLIENT_BELIEVES_CONNECTED;
        emit(event);
    }
}

#[inline(always)]
fn handshake_key(event: &DropEvent) -> HandshakeKey {
    HandshakeKey {
        saddr: event.saddr,
        daddr: event.daddr,
        netns: event.listener.netns,
        sport: event.sport,
        dport: event.dport,
    }
}

/// Notes the drop of this 4-tuple; true when it starts a new episode.
#[inline(always)]
fn remember(event: &DropEvent) -> bool {
    let key = handshake_key(event);
    let gap = crate::config::load64(&raw const SETTINGS.episode_gap_ns);
    // SAFETY: the value is copied out at once (LRU element reuse can at worst misjudge
    // one episode boundary).
    let new = match unsafe { HANDSHAKES.get(&key) } {
        Some(state) => event.ktime_ns.wrapping_sub(state.last_ns) > gap,
        None => true,
    };
    let state = HandshakeState {
        last_ns: event.ktime_ns,
        reason: event.listener.reason,
        _pad: 0,
    };
    let _ = HANDSHAKES.insert(&key, &state, 0);
    new
}

/// Sends `event` to the daemon if the listener's budget for this second allows.
#[inline(always)]
fn emit(event: &DropEvent) {
    if !allow(&event.listener, event.ktime_ns) {
        bump(COUNTER_EVENTS_RATE_LIMITED);
        return;
    }
    match EVENTS.reserve::<DropEvent>(0) {
        Some(mut entry) => {
            entry.write(*event);
            entry.submit(0);
        }
        None => bump(COUNTER_EVENTS_LOST),
    }
}

/// Token check of the listener's per-second event budget. Updates race between CPUs;
/// the limit is approximate, which is all it needs to be.
#[inline(always)]
fn allow(listener: &ListenerKey, now: u64) -> bool {
    let limit = u64::from(crate::config::load(&raw const SETTINGS.events_per_sec) as u32);
    let mut key = *listener;
    key.reason = 0;
    if let Some(state) = RATE.get_ptr_mut(&key) {
        // SAFETY: a valid element pointer from the helper.
        let state = unsafe { &mut *state };
        if now.wrapping_sub(state.window_start_ns) >= WINDOW_NS {
            state.window_start_ns = now;
            state.sent = 0;
        }
        if state.sent >= limit {
            return false;
        }
        state.sent += 1;
        return true;
    }
    if limit == 0 {
        return false;
    }
    let state = RateState {
        window_start_ns: now,
        sent: 1,
    };
    let _ = RATE.insert(&key, &state, 0);
    true
}
