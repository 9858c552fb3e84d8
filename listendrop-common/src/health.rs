//! The programs' own health counters: one slot each in the `COUNTERS` per-CPU array.

/// What went wrong (or was held back) inside the programs, as an index of `COUNTERS`.
///
/// The numbers are the array indices and never change meaning; the daemon sums each slot
/// over the CPUs and exports it under [`Health::label`] in the family [`Health::is_event_loss`]
/// chooses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// An event did not fit in the ring buffer (its drop is still counted).
    RingBufferFull = 0,
    /// A drop of a listener the full counter map had no room for: not attributed.
    MapFull = 1,
    /// A matching drop that carried no listener socket.
    NoListener = 2,
    /// An event held back by the per-listener rate limit (its drop is still counted).
    RateLimited = 3,
    /// A kernel read that failed (a bad offset would show here).
    Read = 4,
    /// A call whose return probe never ran (found stale by the next call).
    StaleCall = 5,
}

impl Health {
    /// Number of slots in `COUNTERS`.
    pub const COUNT: u32 = 6;

    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::RingBufferFull,
        Self::MapFull,
        Self::NoListener,
        Self::RateLimited,
        Self::Read,
        Self::StaleCall,
    ];

    /// The index in `COUNTERS`.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Whether this counts undelivered events (`listendrop_events_lost_total{cause}`)
    /// rather than a problem of the programs (`listendrop_bpf_errors_total{kind}`).
    pub const fn is_event_loss(self) -> bool {
        matches!(self, Self::RingBufferFull | Self::RateLimited)
    }

    /// The `cause` or `kind` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::RingBufferFull => "ring_buffer_full",
            Self::MapFull => "map_full",
            Self::NoListener => "no_listener",
            Self::RateLimited => "rate_limited",
            Self::Read => "read",
            Self::StaleCall => "stale_call",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn indices_are_dense_and_in_order() {
        for (i, h) in Health::ALL.iter().enumerate() {
            assert_eq!(h.index() as usize, i);
        }
    }
}
