//! Command-line interface. The doc comments are the `--help` text.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use listendrop_common::{
    DEFAULT_EPISODE_GAP_SECS, DEFAULT_EVENTS_BYTES, DEFAULT_EVENTS_PER_SEC, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_LISTENER_KEYS,
};

use crate::probes::KindChoice;

/// Which listening TCP sockets drop connections, why, and from whom.
///
/// listendrop attaches eBPF programs to the kernel's handshake drop points, counts every
/// dropped handshake per listening socket and reason in the kernel, logs each one with the
/// client's address, and serves the totals as Prometheus metrics.
///
/// Needs root (or CAP_BPF + CAP_PERFMON), kernel BTF (/sys/kernel/btf/vmlinux) and a
/// mounted tracefs.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Address and port to serve /metrics and /healthz on. Port 0 picks a free port (the
    /// log says which).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:9477"
    )]
    pub listen_address: SocketAddr,

    /// The kernel's BTF, where listendrop reads struct offsets and enum values.
    #[arg(long, value_name = "FILE", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,

    /// Capacity of the in-kernel counter map, in (listener, reason) pairs. Drops of pairs
    /// beyond it are counted in listendrop_drops_unattributed_total{cause="map_full"}.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LISTENER_KEYS,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_listener_keys: u32,

    /// Size of the per-handshake event ring buffer in KiB (a power of two, at least 4).
    /// Events that do not fit are counted in listendrop_events_lost_total.
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_EVENTS_BYTES / 1024,
          value_parser = parse_ring_kib)]
    pub events_buffer_kib: u32,

    /// Which kind of kernel hook to use: `auto` picks, per hook, the best this kernel
    /// allows (fentry, then kprobe, then tracepoint); the others force one kind, for tests.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = KindChoice::Auto)]
    pub probe_kind: KindChoice,

    /// Per-handshake events (log lines) per listener per second; the rest are counted in
    /// listendrop_events_lost_total{cause="rate_limited"}. Counters are always exact.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EVENTS_PER_SEC)]
    pub events_per_listener_per_sec: u32,

    /// A client 4-tuple dropped again within this many seconds of its last drop is the
    /// same handshake (a retransmit); after it, a new one (listendrop_dropped_handshakes_total).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_EPISODE_GAP_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub episode_gap_secs: u64,

    /// How many recently dropped handshakes the kernel remembers (LRU) to tell new
    /// handshakes from retransmits.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_HANDSHAKES,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_handshakes: u32,

    /// Log filter: error, warn, info (every dropped handshake), debug, or a tracing
    /// directive such as `listendrop=debug`. RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1024 * 1024 {
        return Err(format!("{kib} is not a power of two between 4 and 1048576"));
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["listendrop"]).unwrap();
        assert_eq!(cli.listen_address, "127.0.0.1:9477".parse().unwrap());
        assert_eq!(cli.btf, PathBuf::from("/sys/kernel/btf/vmlinux"));
        assert_eq!(cli.events_buffer_kib * 1024, DEFAULT_EVENTS_BYTES);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["listendrop", "--web.listen-address", "nope"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--events-buffer-kib", "100"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--max-listener-keys", "0"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--frobnicate"]).is_err());
    }
}
