//! Maps shared with the daemon. Their names are the `MAP_*` constants of
//! `listendrop_common`; sizes are defaults the daemon may override before load.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuHashMap, RingBuf},
};
use listendrop_common::{
    DropCount, HandshakeKey, HandshakeState, Health, ListenerKey, DEFAULT_EVENTS_BYTES,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_LISTENER_KEYS,
};

use crate::{
    health::bump,
    kernel::{field, Read},
};

/// Packets and handshakes per listener and reason: exact, never sampled. Per-CPU so the
/// hot path needs no atomics (5.10 rejects BPF atomics with fetch); the daemon sums the
/// CPUs. Preallocated (no BPF_F_NO_PREALLOC) so counting never allocates in softirq.
#[map]
pub(crate) static DROPS: PerCpuHashMap<ListenerKey, DropCount> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_LISTENER_KEYS, 0);

/// One record per event (`listendrop_common::DropEvent`). May overflow under load: every
/// record that does not fit is counted as [`Health::RingBufferFull`].
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_EVENTS_BYTES, 0);

/// Recently dropped handshakes (LRU: the oldest is forgotten first), to count a
/// retransmit of a dropped handshake once and to recognise the SYN-ACK retransmits of a
/// handshake whose ACK was dropped.
#[map]
pub(crate) static HANDSHAKES: LruHashMap<HandshakeKey, HandshakeState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_HANDSHAKES, 0);

/// Highest accept queue length seen per listener since the daemon last read it, keyed by
/// socket cookie (0 until the kernel generated one: the daemon's sock_diag does). Catches
/// short stalls that sampling between scrapes misses.
#[map]
pub(crate) static HIGH_WATER: HashMap<u64, u32> =
    HashMap::with_max_entries(DEFAULT_MAX_LISTENER_KEYS, 0);

/// Notes the accept queue length of listener `sk` for the high-water mark.
#[inline(always)]
pub(crate) fn high_water<R: Read>(sk: *const u8) {
    let (Ok(cookie), Ok(len)) = (
        field!(R, sk, sk_cookie).map(|c: u64| c),
        field!(R, sk, sk_ack_backlog).map(|l: u32| l),
    ) else {
        return;
    };
    note_high_water(cookie, len);
}

/// Notes accept queue length `len` of the socket with `cookie` for the high-water mark.
#[inline(always)]
pub(crate) fn note_high_water(cookie: u64, len: u32) {
    if cookie == 0 {
        return;
    }
    match HIGH_WATER.get_ptr_mut(&cookie) {
        // SAFETY: a valid element pointer; a lost race between CPUs costs at most one
        // sample of a maximum.
        Some(max) => unsafe {
            if len > *max {
                *max = len;
            }
        },
        None => {
            let _ = HIGH_WATER.insert(&cookie, &len, 0);
        }
    }
}

/// Counts one packet of `key` (and one handshake when `new_handshake`), creating the key
/// on first use; returns this CPU's value (for its event budget), `None` when the map is
/// full (counted as [`Health::MapFull`]).
#[inline(always)]
pub(crate) fn count(key: &ListenerKey, new_handshake: bool) -> Option<*mut DropCount> {
    let handshakes = u64::from(new_handshake);
    if let Some(slot) = DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of an existing element; programs on one CPU do not
        // nest (see `health::bump`).
        unsafe {
            (*slot).packets += 1;
            (*slot).handshakes += handshakes;
        }
        return Some(slot);
    }
    // BPF_ANY: if another CPU created the key since our lookup, the update only sets this
    // CPU's slot of that element, so no count is lost. Fails only when the map is full.
    let first = DropCount {
        packets: 1,
        handshakes,
        window_start: 0,
        sent: 0,
    };
    if DROPS.insert(key, first, 0).is_err() {
        bump(Health::MapFull);
        return None;
    }
    DROPS.get_ptr_mut(key)
}
