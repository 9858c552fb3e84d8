//! Small helpers shared by the daemon's threads.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, even if a thread panicked while holding it: the data are counters and
/// snapshots, still the best there is, and the exporter must keep serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// For a unit test that needs something of the machine (kernel BTF, tracefs): prints why
/// it is skipped, or fails when `LISTENDROP_REQUIRE_PRIVILEGED` is set (`cargo xtask
/// test`, CI), where the machine must have it.
#[cfg(test)]
pub fn skip_test(why: &str) {
    assert!(
        std::env::var_os("LISTENDROP_REQUIRE_PRIVILEGED").is_none(),
        "{why}; LISTENDROP_REQUIRE_PRIVILEGED is set, so skipping is an error"
    );
    println!("skipped: {why}");
}
