//! Shared helpers of listendrop's integration tests: privilege gate, network namespaces,
//! the real daemon binary, kernel counters (nstat) and real TCP sockets.
//!
//! One crate shared by the privileged tests, the deploy tests and the benchmarks (a
//! dev-dependency of `listendrop`) and the container tests (`listendrop-container-tests`,
//! with the feature `cri`), so that no test target includes another's files.

pub mod bpf;
pub mod containers;
pub mod daemon;
pub mod expect;
pub mod netns;
pub mod programs;
pub mod raw;
pub mod scenarios;
pub mod sockets;
pub mod tools;
pub mod witness;

/// `true` when this process may load eBPF programs. Otherwise prints why the test is
/// skipped and returns `false` — unless `LISTENDROP_REQUIRE_PRIVILEGED` is set (as
/// `cargo xtask test` and CI do), in which case skipping is a failure.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = format!(
        "{test}: skipped: needs root to load eBPF programs and create network namespaces \
         (run `cargo xtask test` as root)"
    );
    if std::env::var_os("LISTENDROP_REQUIRE_PRIVILEGED").is_some() {
        panic!("{why}; LISTENDROP_REQUIRE_PRIVILEGED is set, so skipping is an error");
    }
    println!("{why}");
    false
}
