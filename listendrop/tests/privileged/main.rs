//! Privileged end-to-end tests: the real daemon, real sockets (and raw packets) in a
//! network namespace of the test's own, and the namespace's kernel counters (nstat) as the
//! oracle.
//!
//! They need root (eBPF, namespaces); as another user they print why and pass, unless
//! LISTENDROP_REQUIRE_PRIVILEGED is set (`cargo xtask test`, CI), where skipping fails.
//! The kernel hooks are host-wide, so every assertion is about the test's namespace only.
//! The same binary runs inside the QEMU kernel matrix (`cargo xtask vm-test`).

use listendrop_testsupport as support;

mod ack;
mod context;
mod flood;
mod http;
mod inventory;
mod lifecycle;
mod restart;
mod reuseport;
mod syn;

/// A worker process of the tests that need one: this binary again, running only this
/// (see `support::sockets::serve_in_child`).
#[test]
#[ignore = "run by serve_in_child as a worker process"]
fn support_serve() {
    support::sockets::serve_if_asked();
}
