//! listendrop: which listening TCP sockets drop connections, why, and from whom.
//!
//! The library behind the `listendrop` binary (and its fuzz targets and benchmarks): the
//! kernel side's loading and attachment, the counters and events it produces, the listener
//! inventory, and what the daemon and commands make of them.

pub mod bounds;
pub mod btf;
pub mod check;
pub mod cli;
pub mod config;
pub mod context;
pub mod counters;
pub mod daemon;
pub mod events;
pub mod filter;
pub mod http;
pub mod inventory;
pub mod layout;
pub mod listener;
pub mod metrics;
pub mod privileges;
pub mod probes;
pub mod session;
pub mod status;
pub mod ticks;
pub mod trace;
pub mod tracefs;
pub mod util;
pub mod web;
