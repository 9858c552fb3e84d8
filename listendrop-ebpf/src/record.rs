//! Turning one observation into counts and (maybe) an event: the path every hook shares.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE},
    DropEvent, HandshakeKey, HandshakeState, Health, ListenerKey, RateState, Reason,
};

use crate::{
    config::SETTINGS,
    health::bump,
    kernel::{self, Read},
    maps::{self, EVENTS, HANDSHAKES, RATE},
};

/// One second, the rate-limit window.
const WINDOW_NS: u64 = 1_000_000_000;

/// An event in the making: the listener it concerns and its namespace.
pub(crate) struct Observation {
    /// The event record (key, reason and time filled; tuple and queues by the caller).
    pub event: DropEvent,
    /// The listening socket.
    pub sk: *const u8,
    /// Its network namespace (`struct net *`).
    pub net: *const u8,
}

/// Starts an observation of listener `sk` for `reason`: its key, nothing more (the rest
/// is read only for what is handed to the daemon).
#[inline(always)]
pub(crate) fn observe<R: Read>(sk: *const u8, reason: Reason) -> Option<Observation> {
    let mut event = DropEvent::ZERO;
    let Ok(net) = kernel::read_listener::<R>(sk, &mut event) else {
        bump(Health::Read);
        return None;
    };
    event.listener.reason = reason as u32;
    // SAFETY: a helper without preconditions.
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    Some(Observation { event, sk, net })
}

/// Counts a drop whose 4-tuple is in the event (`tuple_ok` false when it could not be
/// read: the packet still counts, as a new handshake, and no event is sent).
#[inline(always)]
pub(crate) fn drop<R: Read>(obs: &mut Observation, tuple_ok: bool) {
    let new_handshake = !tuple_ok || remember(&obs.event);
    if new_handshake {
        obs.event.flags |= FLAG_NEW_HANDSHAKE;
    }
    maps::count(&obs.event.listener, new_handshake);
    if tuple_ok {
        emit::<R>(obs);
    } else {
        bump(Health::Read);
    }
}

/// Counts a non-drop event under `reason` on the listener of `obs` (no handshake, no
/// event record).
#[inline(always)]
pub(crate) fn count_only(obs: &Observation, reason: Reason) {
    let mut key = obs.event.listener;
    key.reason = reason as u32;
    maps::count(&key, false);
}

/// Counts a SYN-ACK retransmit; when its handshake's ACK was dropped, reports it: the
/// client believes it is connected.
#[inline(always)]
pub(crate) fn synack_retransmit<R: Read>(obs: &mut Observation) {
    maps::count(&obs.event.listener, false);
    let key = handshake_key(&obs.event);
    // SAFETY: the value is copied out at once; a concurrent update can at worst make the
    // reason stale, which only affects this one event's flag.
    let Some(state) = (unsafe { HANDSHAKES.get(&key) }) else {
        return;
    };
    let acked = Reason::from_u32(state.reason).is_some_and(Reason::is_ack_time);
    if acked {
        obs.event.flags |= FLAG_CLIENT_BELIEVES_CONNECTED;
        emit::<R>(obs);
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

/// Notes the drop of this 4-tuple; true when it starts a new episode. A known handshake
/// is updated in place (one lookup); only a new one costs an insertion.
#[inline(always)]
fn remember(event: &DropEvent) -> bool {
    let key = handshake_key(event);
    let gap = crate::config::load64(&raw const SETTINGS.episode_gap_ns);
    if let Some(state) = HANDSHAKES.get_ptr_mut(&key) {
        // SAFETY: a valid element pointer; LRU reuse of the element by another CPU can at
        // worst misjudge one episode boundary.
        let state = unsafe { &mut *state };
        let new = event.ktime_ns.wrapping_sub(state.last_ns) > gap;
        state.last_ns = event.ktime_ns;
        state.reason = event.listener.reason;
        return new;
    }
    let state = HandshakeState {
        last_ns: event.ktime_ns,
        reason: event.listener.reason,
        _pad: 0,
    };
    let _ = HANDSHAKES.insert(&key, &state, 0);
    true
}

/// Hands the event to the daemon if the listener's budget for this second allows, with
/// its queues and cookie read now (and noted for the high-water mark).
#[inline(always)]
fn emit<R: Read>(obs: &mut Observation) {
    if !allow(&obs.event.listener, obs.event.ktime_ns) {
        bump(Health::RateLimited);
        return;
    }
    if kernel::read_queues::<R>(obs.sk, &mut obs.event).is_ok() {
        maps::note_high_water(obs.event.cookie, obs.event.accept_queue_len);
    } else {
        bump(Health::Read);
    }
    match EVENTS.reserve::<DropEvent>(0) {
        Some(mut entry) => {
            entry.write(obs.event);
            entry.submit(0);
        }
        None => bump(Health::RingBufferFull),
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
