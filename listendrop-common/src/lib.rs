//! Types shared by listendrop's eBPF programs and its daemon.
//!
//! Every type that crosses the kernel/user boundary is defined here once, `#[repr(C)]`,
//! with explicit padding so that no byte is left uninitialised (hash-map keys are compared
//! byte by byte in the kernel). `unsafe impl aya::Pod` lives behind the `user` feature.
#![no_std]

pub mod config;
pub mod event;
pub mod key;
pub mod reason;

pub use config::KernelOffsets;
pub use event::DropEvent;
pub use key::ListenerKey;
pub use reason::Reason;

/// `AF_INET` as the kernel stores it in `sock_common.skc_family` (all kernels).
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel stores it in `sock_common.skc_family` (all kernels).
pub const AF_INET6: u16 = 10;

/// Index of the ring-buffer loss counter in the `COUNTERS` per-CPU array.
pub const COUNTER_EVENTS_LOST: u32 = 0;
/// Index of the "counter map full" counter: a drop that could not be attributed to a
/// listener because `DROPS` had no room left for a new key.
pub const COUNTER_DROPS_MAP_FULL: u32 = 1;
/// Index of the "no listener" counter: a matching drop whose `rx_sk` was NULL.
pub const COUNTER_NO_LISTENER: u32 = 2;
/// Number of slots in `COUNTERS`.
pub const COUNTERS_LEN: u32 = 3;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], made only of integers and byte arrays, with
    // every padding byte spelled out as a named field, so any bit pattern is valid.
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}

/// Name of the per-CPU hash map `ListenerKey → u64` of dropped packets.
pub const MAP_DROPS: &str = "DROPS";
/// Name of the ring buffer of [`DropEvent`]s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the per-CPU array of the `COUNTER_*` health counters.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the read-only global holding the [`KernelOffsets`].
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
/// Default number of `ListenerKey`s (listener × reason) the counter map holds.
pub const DEFAULT_MAX_LISTENER_KEYS: u32 = 8192;
/// Default size of the event ring buffer in bytes (a power of two, multiple of the page size).
pub const DEFAULT_EVENTS_BYTES: u32 = 256 * 1024;
