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

/// Per-CPU value of the `DROPS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCount {
    /// Packets (every retransmit that is dropped again counts again), as the kernel's
    /// own counters count them.
    pub packets: u64,
    /// Distinct handshakes: the first drop of a 4-tuple, or the first after
    /// [`crate::Settings::episode_gap_ns`] without a drop of it.
    pub handshakes: u64,
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

const _: () = assert!(core::mem::size_of::<HandshakeKey>() == 40);

/// Value of the `HANDSHAKES` map: when the 4-tuple was last dropped, and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeState {
    /// `bpf_ktime_get_ns()` of the last drop.
    pub last_ns: u64,
    /// The [`crate::Reason`] of the last drop.
    pub reason: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Value of the `RATE` map: the per-listener event budget of the current second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Start of the current one-second window.
    pub window_start_ns: u64,
    /// Events sent in that window.
    pub sent: u64,
}
