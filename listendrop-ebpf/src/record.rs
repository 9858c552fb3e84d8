//! Turning one observation into counts and (maybe) an event: the path every hook shares.
//!
//! A drop costs one lookup in `DROPS` (its counters and this CPU's event budget share the
//! value) and, to tell a new handshake from a retransmit, a look at this CPU's most recent
//! handshake (an array slot) before the `HANDSHAKES` LRU.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE},
    DropCount, DropEvent, HandshakeKey, HandshakeSlot, HandshakeState, Health, Reason,
    HANDSHAKE_SYNC_NS,
};

use crate::{
    config::{load, load64, SETTINGS},
    health::bump,
    kernel::{self, Read},
    maps::{self, EVENTS, HANDSHAKES},
};

/// One second, the event budget's window.
const WINDOW_NS: u64 = 1_000_000_000;

/// This CPU's most recent dropped handshake (see [`HandshakeSlot`]).
#[map]
static LAST_HANDSHAKE: PerCpuArray<HandshakeSlot> = PerCpuArray::with_max_entries(1, 0);

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
    // SAFETY: a helper without preconditions. (The coarse clock would be cheaper, but
    // tracing programs may not call it.)
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
    let counts = maps::count(&obs.event.listener, new_handshake);
    if !tuple_ok {
        bump(Health::Read);
        return;
    }
    if within_budget(counts, obs.event.ktime_ns) {
        emit::<R>(obs);
    } else {
        bump(Health::RateLimited);
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
    let counts = maps::count(&obs.event.listener, false);
    let key = handshake_key(&obs.event);
    let Some(state) = last_drop(&key) else {
        return;
    };
    if Reason::from_u32(state.reason).is_some_and(Reason::is_ack_time) {
        obs.event.flags |= FLAG_CLIENT_BELIEVES_CONNECTED;
        if within_budget(counts, obs.event.ktime_ns) {
            emit::<R>(obs);
        } else {
            bump(Health::RateLimited);
        }
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

/// The last drop of handshake `key`: this CPU's slot, else the LRU.
#[inline(always)]
fn last_drop(key: &HandshakeKey) -> Option<HandshakeState> {
    if let Some(slot) = LAST_HANDSHAKE.get_ptr(0) {
        // SAFETY: a valid pointer to this CPU's slot, read within this run.
        let slot = unsafe { &*slot };
        if slot.key == *key {
            return Some(slot.state);
        }
    }
    // SAFETY: the value is copied out at once; a concurrent update can at worst make the
    // reason stale, which only affects this one event's flag.
    unsafe { HANDSHAKES.get(key) }.copied()
}

/// Notes the drop of this 4-tuple; true when it starts a new episode (the first drop, or
/// the first after `episode_gap_ns` without one). The same handshake again on this CPU
/// touches only its slot; another one writes the slot's back to the LRU and takes it.
#[inline(always)]
fn remember(event: &DropEvent) -> bool {
    let key = handshake_key(event);
    let now = event.ktime_ns;
    let gap = load64(&raw const SETTINGS.episode_gap_ns);
    let state = HandshakeState {
        last_ns: now,
        reason: event.listener.reason,
        _pad: 0,
    };
    let Some(slot) = LAST_HANDSHAKE.get_ptr_mut(0) else {
        return remember_in_lru(&key, &state, gap);
    };
    // SAFETY: a valid pointer to this CPU's slot; programs on one CPU do not nest.
    let slot = unsafe { &mut *slot };
    if slot.key == key {
        // Saturating: another CPU's clock read may be a little ahead of this one's.
        let new = now.saturating_sub(slot.state.last_ns) > gap;
        slot.state = state;
        if new || now.saturating_sub(slot.synced_ns) > HANDSHAKE_SYNC_NS {
            let _ = HANDSHAKES.insert(&key, &state, 0);
            slot.synced_ns = now;
        }
        return new;
    }
    if slot.synced_ns != slot.state.last_ns && slot.key != HandshakeKey::ZERO {
        let _ = HANDSHAKES.insert(&slot.key, &slot.state, 0);
    }
    let new = remember_in_lru(&key, &state, gap);
    *slot = HandshakeSlot {
        key,
        state,
        synced_ns: now,
    };
    new
}

/// [`remember`] in the LRU alone: a known handshake is updated in place (one lookup); only
/// a new one costs an insertion.
#[inline(always)]
fn remember_in_lru(key: &HandshakeKey, state: &HandshakeState, gap: u64) -> bool {
    if let Some(old) = HANDSHAKES.get_ptr_mut(key) {
        // SAFETY: a valid element pointer; LRU reuse of the element by another CPU can at
        // worst misjudge one episode boundary.
        let old = unsafe { &mut *old };
        let new = state.last_ns.saturating_sub(old.last_ns) > gap;
        *old = *state;
        return new;
    }
    let _ = HANDSHAKES.insert(key, state, 0);
    true
}

/// Takes one event from this CPU's budget of the counters' key (`--events-per-listener-
/// per-sec`, per CPU); `false` when spent, or when the counters could not be kept.
#[inline(always)]
fn within_budget(counts: Option<*mut DropCount>, now: u64) -> bool {
    let limit = load(&raw const SETTINGS.events_per_sec) as u64;
    let Some(counts) = counts else {
        return false;
    };
    // SAFETY: this CPU's element of DROPS, valid for this run; see `maps::count`.
    let c = unsafe { &mut *counts };
    if now.saturating_sub(c.window_ns) >= WINDOW_NS {
        c.window_ns = now;
        c.sent = 0;
    }
    if c.sent >= limit {
        return false;
    }
    c.sent += 1;
    true
}

/// Hands the event to the daemon, with its queues and cookie read now (and noted for the
/// high-water mark).
#[inline(always)]
fn emit<R: Read>(obs: &mut Observation) {
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
