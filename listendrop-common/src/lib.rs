//! Types shared by listendrop's eBPF programs and its daemon.
//!
//! Every type that crosses the kernel/user boundary is defined here once, `#[repr(C)]`,
//! with explicit padding so that no byte is left uninitialised (hash-map keys are compared
//! byte by byte in the kernel). `unsafe impl aya::Pod` lives behind the `user` feature.
#![no_std]

pub mod addr;
pub mod config;
pub mod event;
pub mod health;
pub mod key;
pub mod reason;

pub use addr::Addr;
pub use config::{FieldMark, KernelOffsets, Settings, ValueMark, NESTED_CALL_NS};
pub use event::DropEvent;
pub use health::Health;
pub use key::{
    DropCount, HandshakeKey, HandshakeSlot, HandshakeState, ListenerKey, HANDSHAKE_SYNC_NS,
};
pub use reason::Reason;

/// `AF_INET` as the kernel stores it in `sock_common.skc_family` (all kernels).
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel stores it in `sock_common.skc_family` (all kernels).
pub const AF_INET6: u16 = 10;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are #[repr(C)], made only of integers and arrays of them, with
    // every padding byte spelled out as a named field, so any bit pattern is valid.
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::DropCount {}
    unsafe impl aya::Pod for super::HandshakeKey {}
    unsafe impl aya::Pod for super::HandshakeState {}
    unsafe impl aya::Pod for super::HandshakeSlot {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Settings {}
}

/// Name of the per-CPU hash map `ListenerKey → u64` of dropped packets.
pub const MAP_DROPS: &str = "DROPS";
/// Name of the ring buffer of [`DropEvent`]s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the per-CPU array of the [`Health`] counters.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the LRU map of recently dropped handshakes.
pub const MAP_HANDSHAKES: &str = "HANDSHAKES";
/// Name of the per-listener accept-queue high-water map (socket cookie → length).
pub const MAP_HIGH_WATER: &str = "HIGH_WATER";
/// Name of the read-only global holding the [`KernelOffsets`].
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
/// Name of the read-only global holding the [`Settings`].
pub const GLOBAL_SETTINGS: &str = "SETTINGS";
/// Default handshakes remembered to tell new drops from retransmits.
pub const DEFAULT_MAX_HANDSHAKES: u32 = 65536;
/// Default per-listener event rate.
pub const DEFAULT_EVENTS_PER_SEC: u32 = 100;
/// Default gap that ends a handshake's drop episode: longer than the longest gap
/// between two retransmits of one handshake (TCP_RTO_MAX, 120 s).
pub const DEFAULT_EPISODE_GAP_SECS: u64 = 130;
/// Default number of `ListenerKey`s (listener × reason) the counter map holds.
pub const DEFAULT_MAX_LISTENER_KEYS: u32 = 8192;
/// Default size of the event ring buffer in bytes (a power of two, multiple of the page size).
pub const DEFAULT_EVENTS_BYTES: u32 = 256 * 1024;
