//! Small helpers shared by the daemon's threads.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, even if a thread panicked while holding it: the data are counters and
/// snapshots, still the best there is, and the exporter must keep serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
