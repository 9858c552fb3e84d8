//! The allowed range of every numeric option, defined once: the flag's parser, its
//! `LISTENDROP_*` variable (parsed by the same parser) and the configuration file all check
//! a value against the same [`Bounds`] and refuse it with the same sentence.

use std::fmt;

/// A numeric option's allowed values.
#[derive(Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The option's long name (and configuration file key).
    pub key: &'static str,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// Only powers of two.
    pub power_of_two: bool,
    /// What the number counts, for the message (e.g. "seconds").
    pub unit: &'static str,
}

/// Why a value is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub struct OutOfBounds {
    /// The value given, as written.
    pub given: String,
    /// The bounds it missed.
    pub bounds: &'static Bounds,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bounds;
        write!(
            f,
            "{} = {} is out of range: {} takes {}{} from {} to {}",
            b.key,
            self.given,
            b.key,
            if b.power_of_two {
                "a power of two"
            } else {
                "a whole number"
            },
            if b.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.unit)
            },
            b.min,
            b.max
        )
    }
}

impl Bounds {
    /// `value` if it is allowed.
    pub fn check(&'static self, value: u64) -> Result<u64, OutOfBounds> {
        let fits = (self.min..=self.max).contains(&value)
            && (!self.power_of_two || value.is_power_of_two());
        if fits {
            Ok(value)
        } else {
            Err(OutOfBounds {
                given: value.to_string(),
                bounds: self,
            })
        }
    }

    /// Parses `text` (a flag or environment value) and checks it.
    pub fn parse<T: TryFrom<u64>>(&'static self, text: &str) -> Result<T, OutOfBounds> {
        let refused = || OutOfBounds {
            given: text.to_owned(),
            bounds: self,
        };
        let value: u64 = text.trim().parse().map_err(|_| refused())?;
        let value = self.check(value).map_err(|_| refused())?;
        T::try_from(value).map_err(|_| refused())
    }
}

const fn bounds(key: &'static str, min: u64, max: u64, unit: &'static str) -> Bounds {
    Bounds {
        key,
        min,
        max,
        power_of_two: false,
        unit,
    }
}

/// `--web.max-connections`.
pub static WEB_MAX_CONNECTIONS: Bounds =
    bounds("web-max-connections", 1, 65_536, "HTTP connections");
/// `--max-listener-keys`.
pub static MAX_LISTENER_KEYS: Bounds = bounds(
    "max-listener-keys",
    1,
    1_048_576,
    "listener and reason pairs",
);
/// `--max-handshakes`.
pub static MAX_HANDSHAKES: Bounds = bounds("max-handshakes", 1, 16_777_216, "handshakes");
/// `--events-buffer-kib`.
pub static EVENTS_BUFFER_KIB: Bounds = Bounds {
    key: "events-buffer-kib",
    min: 4,
    max: 1_048_576,
    power_of_two: true,
    unit: "KiB",
};
/// `--events-per-listener-per-sec`.
pub static EVENTS_PER_SEC: Bounds = bounds(
    "events-per-listener-per-sec",
    0,
    1_000_000,
    "events per second; 0 logs none",
);
/// `--episode-gap-secs`.
pub static EPISODE_GAP_SECS: Bounds = bounds("episode-gap-secs", 1, 86_400, "seconds");
/// `--inventory-interval-secs`.
pub static INVENTORY_INTERVAL_SECS: Bounds = bounds("inventory-interval-secs", 1, 3_600, "seconds");
/// `--stale-after-secs`.
pub static STALE_AFTER_SECS: Bounds = bounds("stale-after-secs", 1, 31_536_000, "seconds");
/// `--container-api-timeout-ms`: long enough for a loaded engine, short enough that an
/// engine that hangs never holds an inventory pass up for long.
pub static CONTAINER_API_TIMEOUT_MS: Bounds =
    bounds("container-api-timeout-ms", 10, 30_000, "milliseconds");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sentence_for_every_way_of_missing() {
        assert_eq!(EPISODE_GAP_SECS.parse::<u64>("130"), Ok(130));
        let e = EPISODE_GAP_SECS.parse::<u64>("0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "episode-gap-secs = 0 is out of range: episode-gap-secs takes a whole number \
             (seconds) from 1 to 86400"
        );
        assert_eq!(EPISODE_GAP_SECS.check(0).unwrap_err(), e);
        assert!(EPISODE_GAP_SECS.parse::<u64>("86401").is_err());
        assert!(EPISODE_GAP_SECS.parse::<u64>("-1").is_err());
        assert!(EPISODE_GAP_SECS.parse::<u64>("many").is_err());
        // Within the bounds but not within the type: refused too.
        static WIDE: Bounds = bounds("wide", 0, u64::MAX, "");
        assert!(WIDE.parse::<u32>("4294967296").is_err());
        assert_eq!(
            EVENTS_BUFFER_KIB
                .parse::<u32>("100")
                .unwrap_err()
                .to_string(),
            "events-buffer-kib = 100 is out of range: events-buffer-kib takes a power of two \
             (KiB) from 4 to 1048576"
        );
        assert_eq!(EVENTS_BUFFER_KIB.parse::<u32>("256"), Ok(256));
    }

    #[test]
    fn seconds_fit_in_nanoseconds() {
        // The programs get the episode gap in nanoseconds (u64).
        assert!(EPISODE_GAP_SECS.max.checked_mul(1_000_000_000).is_some());
    }
}
