//! What happened to a handshake: the `reason` label of the drop metrics, and the kinds of
//! non-drop events counted in the same in-kernel map.

/// Event classes, as stored in [`crate::ListenerKey::reason`] and [`crate::DropEvent`].
///
/// The numbers are listendrop's own and never change meaning; they are not the kernel's
/// `enum skb_drop_reason` (whose numbers differ between kernels). Values below
/// [`Reason::FIRST_NON_DROP`] are drops (`listendrop_drops_total`); the others are
/// counted in their own metric families.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The accept queue was full when the client's final ACK (or first data) arrived:
    /// `tcp_check_req` → `syn_recv_sock` failed → `listen_overflow`. Kernel counters
    /// ListenOverflows, ListenDrops.
    AckAcceptQueueFull = 1,
    /// A SYN arrived while the accept queue was full (`tcp_conn_request`, checked after
    /// the cookie decision, so cookie SYNs are dropped too). ListenOverflows, ListenDrops.
    SynAcceptQueueFull = 2,
    /// The SYN queue was full and syncookies are off: `tcp_syn_flood_action` refused the
    /// SYN. TCPReqQFullDrop, ListenDrops.
    SynQueueFull = 3,
    /// Syncookies off and the SYN queue in its last quarter of `tcp_max_syn_backlog`: SYNs
    /// from peers not proven alive are dropped. ListenDrops only.
    SynBacklogPressure = 4,
    /// A valid syncookie ACK arrived while the accept queue was full
    /// (`cookie_v4_check`/`cookie_v6_check` → `syn_recv_sock`). ListenOverflows,
    /// ListenDrops. Never answered with a reset.
    CookieAckAcceptQueueFull = 5,
    /// Any other listen drop (route, LSM, memory failures...). ListenDrops.
    Other = 6,

    /// Not a drop: the SYN queue was full (or syncookies=2) and a syncookie SYN-ACK was
    /// sent. SyncookiesSent.
    SyncookieSent = 16,
    /// Not a drop: the listener retransmitted a SYN-ACK (`tcp:tcp_retransmit_synack`).
    SynackRetransmit = 17,
    /// An ACK-time overflow answered with a reset because `tcp_abort_on_overflow=1`
    /// (the drop itself is counted as [`Reason::AckAcceptQueueFull`]). EmbryonicRsts.
    OverflowReset = 18,
}

impl Reason {
    /// The first value that is not a drop.
    pub const FIRST_NON_DROP: u32 = 16;

    /// Every reason.
    pub const ALL: [Self; 9] = [
        Self::AckAcceptQueueFull,
        Self::SynAcceptQueueFull,
        Self::SynQueueFull,
        Self::SynBacklogPressure,
        Self::CookieAckAcceptQueueFull,
        Self::Other,
        Self::SyncookieSent,
        Self::SynackRetransmit,
        Self::OverflowReset,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AckAcceptQueueFull => "ack_accept_queue_full",
            Self::SynAcceptQueueFull => "syn_accept_queue_full",
            Self::SynQueueFull => "syn_queue_full",
            Self::SynBacklogPressure => "syn_backlog_pressure",
            Self::CookieAckAcceptQueueFull => "cookie_ack_accept_queue_full",
            Self::Other => "other",
            Self::SyncookieSent => "syncookie_sent",
            Self::SynackRetransmit => "synack_retransmit",
            Self::OverflowReset => "overflow_reset",
        }
    }

    /// Whether this class is a dropped packet (`listendrop_drops_total`).
    pub const fn is_drop(self) -> bool {
        (self as u32) < Self::FIRST_NON_DROP
    }

    /// Whether the drop happens when the client's ACK arrives, i.e. after the client
    /// considers the connection established.
    pub const fn is_ack_time(self) -> bool {
        matches!(
            self,
            Self::AckAcceptQueueFull | Self::CookieAckAcceptQueueFull
        )
    }

    /// The reason whose label is `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == label)
    }

    /// The reason stored as `raw` by the eBPF side, if listendrop knows it.
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::AckAcceptQueueFull,
            2 => Self::SynAcceptQueueFull,
            3 => Self::SynQueueFull,
            4 => Self::SynBacklogPressure,
            5 => Self::CookieAckAcceptQueueFull,
            6 => Self::Other,
            16 => Self::SyncookieSent,
            17 => Self::SynackRetransmit,
            18 => Self::OverflowReset,
            _ => return None,
        })
    }
}
