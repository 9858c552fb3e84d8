//! Opening the kernel side: BTF, privileges, layout, programs — shared by every command
//! that loads the programs (the daemon, `check`).

use listendrop_common::Reason;

use crate::{
    btf::{BtfError, KernelBtf},
    cli::ProbeArgs,
    layout::Layout,
    privileges,
    probes::{Pinning, ProbeError, Probes, Sizes},
    ticks,
    tracefs::Tracefs,
};

/// Why the kernel side could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The kernel's BTF is missing or unreadable.
    #[error(transparent)]
    Btf(BtfError),
    /// The process may not load programs (the message names the fix).
    #[error("{0}")]
    Privileges(String),
    /// A field every hook reads is missing.
    #[error(
        "this kernel lacks socket fields every listendrop hook reads ({0}); please report \
         it with `uname -r`"
    )]
    Layout(BtfError),
    /// Loading or pinning failed.
    #[error(transparent)]
    Probes(#[from] ProbeError),
}

/// Resolves the layout and loads and attaches the programs as `args` ask (pinned under
/// `pinning`, adopting a previous run's pins, when given).
pub fn open(args: &ProbeArgs, pinning: Option<&Pinning>) -> Result<Probes, SessionError> {
    let start = std::time::Instant::now();
    let btf = KernelBtf::open(&args.btf).map_err(SessionError::Btf)?;
    tracing::debug!("kernel BTF parsed in {:?}", start.elapsed());
    privileges::check().map_err(SessionError::Privileges)?;
    let tracefs = Tracefs::locate();
    let layout = Layout::resolve(&btf, tracefs.as_ref().map_err(String::as_str))
        .map_err(SessionError::Layout)?;
    // What the hooks need of the BTF (offsets, attach ids) is in the layout now: unmap it
    // before the programs load (start-up memory).
    drop(btf);
    tracing::debug!("kernel layout resolved at {:?}", start.elapsed());
    let sizes = Sizes {
        max_listener_keys: args.max_listener_keys,
        max_handshakes: args.max_handshakes,
        events_bytes: args.events_buffer_kib * 1024,
    };
    let settings = ticks::settings(
        ticks::Tick::of_this_kernel(),
        std::time::Duration::from_secs(args.episode_gap_secs),
        args.events_per_listener_per_sec,
    );
    Ok(Probes::load(
        &layout,
        &settings,
        sizes,
        args.probe_kind,
        pinning,
    )?)
}

/// Logs what was attached, what was not and why, and which drop classes that leaves
/// unobserved.
pub fn report(probes: &Probes) {
    if probes.resumed {
        tracing::info!(
            "resumed the hooks a previous run left pinned in {}: counters continue",
            probes
                .pinned
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display()
        );
    }
    for hook in &probes.hooks {
        let kind = hook.kind.as_str();
        match &hook.status {
            Ok(()) => tracing::info!("attached {kind} {}", hook.probe()),
            Err(why) => tracing::info!("not attached: {kind} {}: {why}", hook.probe()),
        }
    }
    let uncovered: Vec<&str> = probes
        .coverage()
        .into_iter()
        .filter(|(_, covered)| !covered)
        .map(|(reason, _)| reason.as_str())
        .collect();
    if uncovered.len() == Reason::ALL.len() {
        tracing::warn!(
            "no hook could be attached on this kernel: listendrop serves its health metrics \
             but will count no drops"
        );
    } else if !uncovered.is_empty() {
        tracing::warn!(
            "not observable on this kernel (listendrop_coverage=0): {}",
            uncovered.join(", ")
        );
    }
}
