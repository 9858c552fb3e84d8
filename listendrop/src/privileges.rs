//! Checks, before touching the kernel, that the process may load and attach programs, so
//! the user gets the fix instead of an EPERM from deep inside the loader.

use caps::{CapSet, Capability};

/// `Err` with the fix when the effective capabilities cannot load and attach tracing
/// programs: CAP_BPF + CAP_PERFMON (5.8+), or CAP_SYS_ADMIN (any kernel).
pub fn check() -> Result<(), String> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON))
    {
        return Ok(());
    }
    Err(
        "listendrop needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load its eBPF \
         programs: run it as root (sudo listendrop) or through the systemd unit in \
         deploy/systemd/listendrop.service"
            .to_owned(),
    )
}
