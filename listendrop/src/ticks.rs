//! The programs' clock: kernel ticks (jiffies). `bpf_jiffies64` is one load once the
//! verifier has inlined it, where `bpf_ktime_get_ns` reads the clock source on every drop;
//! the daemon turns its durations into ticks before load ([`Settings`]).

use std::time::Duration;

use listendrop_common::{Settings, HANDSHAKE_SYNC_NS, NESTED_CALL_NS};

/// The length of one kernel tick (1/HZ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick(Duration);

impl Tick {
    /// This kernel's: the resolution of CLOCK_MONOTONIC_COARSE, which the kernel reports
    /// as its tick length (LOW_RES_NSEC = TICK_NSEC, every kernel since 2.6.32). 4 ms
    /// (HZ=250), Debian's, if it cannot be read.
    pub fn of_this_kernel() -> Self {
        nix::time::clock_getres(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
            .ok()
            .map(Duration::from)
            .filter(|d| !d.is_zero())
            .map_or(Self(Duration::from_millis(4)), Self)
    }

    /// A tick of `length` (tests).
    pub const fn of(length: Duration) -> Self {
        Self(length)
    }

    /// `d` in ticks, rounded up (a duration is never cut short), at least one and at most
    /// `i64::MAX` (the programs compare signed differences of ticks: 2^63 ticks of 1 ms
    /// are 292 million years).
    pub fn ticks(self, d: Duration) -> u64 {
        let tick = self.0.as_nanos().max(1);
        u64::try_from(d.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .clamp(1, i64::MAX as u64)
    }
}

/// The programs' settings: `episode_gap` and the kernel's fixed delays in ticks of `tick`.
pub fn settings(tick: Tick, episode_gap: Duration, events_per_sec: u32) -> Settings {
    Settings {
        episode_gap_ticks: tick.ticks(episode_gap),
        window_ticks: tick.ticks(Duration::from_secs(1)),
        sync_ticks: tick.ticks(Duration::from_nanos(HANDSHAKE_SYNC_NS)),
        nested_ticks: tick.ticks(Duration::from_nanos(NESTED_CALL_NS)),
        events_per_sec,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_ticks() {
        let tick = Tick::of(Duration::from_millis(4));
        assert_eq!(tick.ticks(Duration::from_secs(1)), 250);
        assert_eq!(tick.ticks(Duration::from_millis(10)), 3);
        assert_eq!(tick.ticks(Duration::ZERO), 1);
        // The programs compare signed differences: never more than i64::MAX.
        assert_eq!(tick.ticks(Duration::MAX), i64::MAX as u64);
        assert_eq!(
            Tick::of(Duration::from_nanos(1)).ticks(Duration::MAX),
            i64::MAX as u64
        );
        let s = settings(
            Tick::of(Duration::from_millis(10)),
            Duration::from_secs(60),
            7,
        );
        assert_eq!(
            (
                s.episode_gap_ticks,
                s.window_ticks,
                s.sync_ticks,
                s.nested_ticks
            ),
            (6000, 100, 10, 1)
        );
        assert_eq!(s.events_per_sec, 7);
    }

    #[test]
    fn this_kernels_tick_is_a_kernel_hz() {
        // CONFIG_HZ is one of 100, 250, 300, 1000.
        let tick = Tick::of_this_kernel();
        let hz = tick.ticks(Duration::from_secs(1));
        assert!([100, 250, 300, 1000].contains(&hz), "{tick:?}");
    }
}
