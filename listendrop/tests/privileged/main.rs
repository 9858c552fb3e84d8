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
mod http;
mod inventory;
mod lifecycle;
mod syn;
