//! Why a handshake was dropped: the `reason` label of every drop metric.

/// Drop classes, as stored in [`crate::ListenerKey::reason`] and [`crate::DropEvent`].
///
/// The numbers are listendrop's own and never change meaning; they are not the kernel's
/// `enum skb_drop_reason` (whose numbers differ between kernels).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The accept queue was full when the client's final ACK (or first data) arrived:
    /// `tcp_check_req` → `syn_recv_sock` failed → `listen_overflow` (kernel counters
    /// ListenOverflows and ListenDrops).
    AckAcceptQueueFull = 1,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Self; 1] = [Self::AckAcceptQueueFull];

    /// The value of the `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AckAcceptQueueFull => "ack_accept_queue_full",
        }
    }

    /// The reason stored as `raw` by the eBPF side, if listendrop knows it.
    pub const fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::AckAcceptQueueFull),
            _ => None,
        }
    }
}
