//! The key of the in-kernel per-listener drop counters.

/// One listening socket, as the metrics label it, plus the drop [`crate::Reason`].
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
    /// `ls -i /proc/PID/ns/net` and `/run/netns/NAME` show.
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
