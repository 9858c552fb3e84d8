//! Keys and values of the in-kernel maps.

/// One listening socket, as the metrics label it, plus the event [`crate::Reason`].
///
/// Two sockets bound to the same address and port in one network namespace
/// (SO_REUSEPORT groups) share a key: they share their labels too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// Bound address in network byte order: IPv4 in the first 4 bytes (rest zero),
    /// IPv6 in all 16. All zero for a wildcard listener.
    pub addr: [u8; 16],
    /// Inode number of the listener's network namespace (`net->ns.inum`), the number
    /// `ls -iL /proc/PID/ns/net` and `/run/netns/NAME` show.
    pub netns: u32,
    /// Bound port, host byte order (`skc_num`).
    pub port: u16,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`] (`skc_family`).
    pub family: u16,
    /// A [`crate::Reason`] as `u32`.
    pub reason: u32,
}

impl ListenerKey {
    /// An all-zero key, the starting point the eBPF side fills in.
    pub const ZERO: Self = Self {
        addr: [0; 16],
        netns: 0,
        port: 0,
        family: 0,
        reason: 0,
    };
}

// 16 + 4 + 2 + 2 + 4: no implicit padding, so the kernel's bytewise hash sees only data.
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 28);

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
    pub saddr: [u8; 16],
    /// Server address.
    pub daddr: [u8; 16],
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
        saddr: [0; 16],
        daddr: [0; 16],
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
