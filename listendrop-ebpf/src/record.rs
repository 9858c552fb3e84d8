//! Turning one observation into counts and (maybe) an event: the path every hook shares.
//!
//! A drop costs one lookup in `DROPS` (its counters and this CPU's event budget share the
//! value) and, to tell a new handshake from a retransmit, a look at this CPU's most recent
//! handshake (an array slot) before the `HANDSHAKES` LRU.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::map,
    maps::PerCpuArray,
};
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE},
    DropCount, DropEvent, HandshakeKey, HandshakeSlot, HandshakeState, Health, ListenerKey, Reason,
};

const _: () = assert!(core::mem::align_of::<HandshakeKey>() == 4);

use crate::{
    config::{load, load64, SETTINGS},
    health::bump,
    kernel::{self, Queues, Read, Tuple},
    maps::{self, EVENTS, HANDSHAKES},
};

/// This CPU's most recent dropped handshake (see [`HandshakeSlot`]).
#[map]
static LAST_HANDSHAKE: PerCpuArray<HandshakeSlot> = PerCpuArray::with_max_entries(1, 0);

/// What a hook saw of one drop: the counters' key, the listener and its namespace, and
/// when. The event record is built only for what is handed to the daemon (`emit`): the
/// common path moves a few words, not a 96-byte record.
pub(crate) struct Observation {
    /// The listener and the reason: the counters' key.
    pub key: ListenerKey,
    /// `FLAG_*` bits for the event.
    pub flags: u16,
    /// The listening socket.
    pub sk: *const u8,
    /// Its network namespace (`struct net *`).
    pub net: *const u8,
    /// `jiffies` now: the time of counting (an event is stamped in nanoseconds only when
    /// it is handed to the daemon).
    pub now: u64,
}

/// Starts an observation of listener `sk` for `reason`: its key, nothing more (the rest
/// is read only for what is handed to the daemon).
#[inline(always)]
pub(crate) fn observe<R: Read>(sk: *const u8, reason: Reason) -> Option<Observation> {
    // SAFETY: a helper without preconditions (5.5+), which the verifier replaces with one
    // load of `jiffies` on 64-bit JITs: a tick's resolution (1-10 ms) is plenty for a
    // one-second budget and an episode gap of seconds. (The coarse clock would be as
    // cheap, but tracing programs may not call it.) Read first: the compiler takes it
    // for a call that clobbers the argument registers, and spills whatever they hold.
    let now = unsafe { bpf_jiffies64() };
    let Ok((mut key, net)) = kernel::read_listener::<R>(sk) else {
        bump(Health::Read);
        return None;
    };
    key.reason = reason as u8;
    Some(Observation {
        key,
        flags: 0,
        sk,
        net,
        now,
    })
}

/// Counts a drop of the packet with 4-tuple `tuple` (`None` when it could not be read:
/// the packet still counts, as a new handshake, and no event is sent).
#[inline(always)]
pub(crate) fn drop<R: Read>(obs: &mut Observation, tuple: Option<&Tuple>) {
    let new_handshake = match tuple {
        Some(tuple) => remember(obs, tuple),
        None => true,
    };
    if new_handshake {
        obs.flags |= FLAG_NEW_HANDSHAKE;
    }
    let counts = maps::count(&obs.key, new_handshake);
    let Some(tuple) = tuple else {
        bump(Health::Read);
        return;
    };
    if within_budget(counts, obs.now) {
        emit::<R>(obs, tuple);
    } else {
        bump(Health::RateLimited);
    }
}

/// Counts a non-drop event under `reason` on the listener of `obs` (no handshake, no
/// event record).
#[inline(always)]
pub(crate) fn count_only(obs: &Observation, reason: Reason) {
    let mut key = obs.key;
    key.reason = reason as u8;
    maps::count(&key, false);
}

/// Counts a SYN-ACK retransmit of the handshake `tuple`; when its handshake's ACK was
/// dropped, reports it: the client believes it is connected.
#[inline(always)]
pub(crate) fn synack_retransmit<R: Read>(obs: &mut Observation, tuple: &Tuple) {
    let counts = maps::count(&obs.key, false);
    let key = handshake_key(obs, tuple);
    let Some(state) = last_drop(&key) else {
        return;
    };
    if Reason::from_u32(state.reason).is_some_and(Reason::is_ack_time) {
        obs.flags |= FLAG_CLIENT_BELIEVES_CONNECTED;
        if within_budget(counts, obs.now) {
            emit::<R>(obs, tuple);
        } else {
            bump(Health::RateLimited);
        }
    }
}

#[inline(always)]
fn handshake_key(obs: &Observation, tuple: &Tuple) -> HandshakeKey {
    HandshakeKey {
        saddr: tuple.saddr,
        daddr: tuple.daddr,
        netns: obs.key.netns,
        sport: tuple.sport,
        dport: tuple.dport,
    }
}

/// Whether two handshakes are the same, compared by words.
#[inline(always)]
fn same(a: &HandshakeKey, b: &HandshakeKey) -> bool {
    // SAFETY: HandshakeKey is repr(C), 40 bytes without padding (asserted where it is
    // defined) and 4-aligned: as ten u32 every bit pattern is valid.
    let (a, b) = unsafe {
        (
            &*(a as *const HandshakeKey).cast::<[u32; 10]>(),
            &*(b as *const HandshakeKey).cast::<[u32; 10]>(),
        )
    };
    // XORs folded by hand: `==` on the arrays, or a chain of `&&`, becomes a call to a
    // byte-by-byte memcmp in BPF.
    let mut diff = 0;
    for i in 0..10 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// The last drop of handshake `key`: this CPU's slot, else the LRU.
#[inline(always)]
fn last_drop(key: &HandshakeKey) -> Option<HandshakeState> {
    if let Some(slot) = LAST_HANDSHAKE.get_ptr(0) {
        // SAFETY: a valid pointer to this CPU's slot, read within this run.
        let slot = unsafe { &*slot };
        if same(&slot.key, key) {
            return Some(slot.state);
        }
    }
    // SAFETY: the value is copied out at once; a concurrent update can at worst make the
    // reason stale, which only affects this one event's flag.
    unsafe { HANDSHAKES.get(key) }.copied()
}

/// Notes the drop of `tuple` at `obs.now`; true when it starts a new episode (the
/// first drop, or the first after `episode_gap_ticks` without one). The same handshake
/// again on this CPU touches only its slot; another one writes the slot's back to the LRU
/// and takes it.
#[inline(always)]
fn remember(obs: &Observation, tuple: &Tuple) -> bool {
    let key = handshake_key(obs, tuple);
    let now = obs.now;
    let gap = load64(&raw const SETTINGS.episode_gap_ticks) as i64;
    let state = HandshakeState {
        last_tick: now,
        reason: u32::from(obs.key.reason),
        _pad: 0,
    };
    let Some(slot) = LAST_HANDSHAKE.get_ptr_mut(0) else {
        return remember_in_lru(&key, &state, gap);
    };
    // SAFETY: a valid pointer to this CPU's slot; programs on one CPU do not nest.
    let slot = unsafe { &mut *slot };
    if same(&slot.key, &key) {
        let new = elapsed(now, slot.state.last_tick) > gap;
        slot.state = state;
        if new || elapsed(now, slot.synced_tick) > load64(&raw const SETTINGS.sync_ticks) as i64 {
            let _ = HANDSHAKES.insert(&key, &state, 0);
            slot.synced_tick = now;
        }
        return new;
    }
    if slot.synced_tick != slot.state.last_tick && !same(&slot.key, &HandshakeKey::ZERO) {
        let _ = HANDSHAKES.insert(&slot.key, &slot.state, 0);
    }
    let new = remember_in_lru(&key, &state, gap);
    *slot = HandshakeSlot {
        key,
        state,
        synced_tick: now,
    };
    new
}

/// [`remember`] in the LRU alone: a known handshake is updated in place (one lookup); only
/// a new one costs an insertion.
#[inline(always)]
fn remember_in_lru(key: &HandshakeKey, state: &HandshakeState, gap: i64) -> bool {
    if let Some(old) = HANDSHAKES.get_ptr_mut(key) {
        // SAFETY: a valid element pointer; LRU reuse of the element by another CPU can at
        // worst misjudge one episode boundary.
        let old = unsafe { &mut *old };
        let new = elapsed(state.last_tick, old.last_tick) > gap;
        *old = *state;
        return new;
    }
    let _ = HANDSHAKES.insert(key, state, 0);
    true
}

/// Ticks from `then` to `now`, negative when `then` is later (the LRU may hold a tick
/// another CPU wrote a little after this program read `now`): one subtraction and one
/// signed compare where saturating arithmetic took a compare and a select. Ticks never
/// lie 2^63 apart, and the settings compared with it are at most `i64::MAX`
/// (`ticks::Tick::ticks`).
#[inline(always)]
fn elapsed(now: u64, then: u64) -> i64 {
    now.wrapping_sub(then) as i64
}

/// Takes one event from this CPU's budget of the counters' key (`--events-per-listener-
/// per-sec`, per CPU) at tick `now`; `false` when spent, or when the counters could not be
/// kept.
#[inline(always)]
fn within_budget(counts: Option<*mut DropCount>, now: u64) -> bool {
    let limit = load(&raw const SETTINGS.events_per_sec) as u64;
    let Some(counts) = counts else {
        return false;
    };
    // SAFETY: this CPU's element of DROPS, valid for this run; see `maps::count`.
    let c = unsafe { &mut *counts };
    if elapsed(now, c.window_start) >= load64(&raw const SETTINGS.window_ticks) as i64 {
        c.window_start = now;
        c.sent = 0;
    }
    if c.sent >= limit {
        return false;
    }
    c.sent += 1;
    true
}

/// Hands the event to the daemon, stamped now, with the listener's queues and cookie
/// read now (and noted for the high-water mark).
#[inline(always)]
fn emit<R: Read>(obs: &Observation, tuple: &Tuple) {
    let queues = match kernel::read_queues::<R>(obs.sk) {
        Ok(q) => {
            maps::note_high_water(q.cookie, q.accept_len);
            q
        }
        Err(_) => {
            bump(Health::Read);
            Queues::default()
        }
    };
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        bump(Health::RingBufferFull);
        return;
    };
    entry.write(DropEvent {
        // SAFETY: a helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cookie: queues.cookie,
        listener: obs.key,
        accept_queue_len: queues.accept_len,
        saddr: tuple.saddr,
        daddr: tuple.daddr,
        sport: tuple.sport,
        dport: tuple.dport,
        family: tuple.family,
        flags: obs.flags,
        accept_queue_max: queues.accept_max,
        syn_queue_len: queues.syn_len,
        _pad: 0,
    });
    entry.submit(0);
}
