//! Keys and values of the in-kernel maps.

use crate::{Addr, Reason};

/// One listening socket, as the metrics label it, plus the event [`crate::Reason`].
///
/// Two sockets bound to the same address and port in one network namespace
/// (SO_REUSEPORT groups) share a key: they share their labels too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// Bound address (all zero for a wildcard listener).
    pub addr: Addr,
    /// Inode number of the listener's network namespace (`net->ns.inum`), the number
    /// `ls -iL /proc/PID/ns/net` and `/run/netns/NAME` show.
    pub netns: u32,
    /// Bound port, host byte order (`skc_num`).
    pub port: u16,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`] (`skc_family`), which fit a byte.
    pub family: u8,
    /// A [`crate::Reason`] as a byte.
    pub reason: u8,
}

impl ListenerKey {
    /// An all-zero key, the starting point the eBPF side fills in.
    pub const ZERO: Self = Self {
        addr: Addr::ZERO,
        netns: 0,
        port: 0,
        family: 0,
        reason: 0,
    };
}

// 16 + 4 + 2 + 1 + 1: no implicit padding, so the kernel's bytewise hash sees only data.
// 24 bytes: the map's hash (jhash, in 12-byte rounds) mixes once where 28 bytes mixed
// twice, and its compare (memcmp, by 8-byte words on 64-bit hosts) reads three words where
// 28 bytes took three and a byte loop, on every counted drop.
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 24);
// Every reason and family fits the key's byte.
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!(Reason::ALL[i] as u32 <= u8::MAX as u32);
        i += 1;
    }
    assert!(crate::AF_INET <= u8::MAX as u16);
    assert!(crate::AF_INET6 <= u8::MAX as u16);
};

impl ListenerKey {
    /// The key's reason (`None`: a byte no [`Reason`] has).
    pub const fn reason(&self) -> Option<Reason> {
        Reason::from_u32(self.reason as u32)
    }

    /// The key's family as the kernel numbers it ([`crate::AF_INET`], [`crate::AF_INET6`]).
    pub const fn family(&self) -> u16 {
        self.family as u16
    }
}

/// Per-CPU value of the `DROPS` map: the counts, and this CPU's event budget for the key,
/// kept in the same value so that a drop costs one map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCount {
    /// Packets (every retransmit that is dropped again counts again), as the kernel's
    /// own counters count them.
    pub packets: u64,
    /// Distinct handshakes: the first drop of a 4-tuple, or the first after
    /// [`crate::Settings::episode_gap_ticks`] without a drop of it.
    pub handshakes: u64,
    /// Start of the current one-second event window on this CPU (jiffies).
    pub window_start: u64,
    /// Events handed to the daemon in that window on this CPU.
    pub sent: u64,
}

/// A handshake (one 4-tuple in one network namespace): key of the `HANDSHAKES` LRU map
/// that tells a new dropped handshake from a retransmit of one already dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandshakeKey {
    /// Client address (as in [`crate::DropEvent::saddr`]).
    pub saddr: Addr,
    /// Server address.
    pub daddr: Addr,
    /// Network namespace inode.
    pub netns: u32,
    /// Client port, host order.
    pub sport: u16,
    /// Server port, host order.
    pub dport: u16,
}

impl HandshakeKey {
    /// An all-zero key (no handshake: an empty [`HandshakeSlot`]).
    pub const ZERO: Self = Self {
        saddr: Addr::ZERO,
        daddr: Addr::ZERO,
        netns: 0,
        sport: 0,
        dport: 0,
    };
}

const _: () = assert!(core::mem::size_of::<HandshakeKey>() == 40);

/// Value of the `HANDSHAKES` map: when the 4-tuple was last dropped, and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeState {
    /// `jiffies` at the last drop.
    pub last_tick: u64,
    /// The [`crate::Reason`] of the last drop.
    pub reason: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// This CPU's most recent dropped handshake, in front of the `HANDSHAKES` LRU: a flood's
/// retransmits (one 4-tuple, one CPU: the NIC or the sender hashes a flow to one) then cost
/// no hash lookup. Written back to the LRU when another handshake takes the slot, and at
/// least every [`HANDSHAKE_SYNC_NS`], so the LRU lags by at most that.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeSlot {
    /// The handshake (all zero: empty).
    pub key: HandshakeKey,
    /// Its last drop and reason.
    pub state: HandshakeState,
    /// When the LRU last got `state` (jiffies).
    pub synced_tick: u64,
}

/// Longest delay before a cached handshake's last drop reaches the LRU (in ticks:
/// [`crate::Settings::sync_ticks`]).
pub const HANDSHAKE_SYNC_NS: u64 = 100_000_000;
