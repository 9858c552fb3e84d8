//! listendrop's kernel-side programs.
//!
//! Each hook lives in `probes/<hook>.rs` as a thin wrapper around a `try_*` function that
//! returns a `Result`; errors end the program quietly, they never panic in the kernel.
//! Kernel struct offsets are not compiled in: they come from [`config`], filled by the
//! daemon from the running kernel's BTF.
#![no_std]
#![no_main]

mod calls;
mod config;
mod health;
mod kernel;
mod maps;
mod probes;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
