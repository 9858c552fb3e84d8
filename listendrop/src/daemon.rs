//! The daemon: bind, resolve the kernel layout, load and attach, then serve metrics and
//! log drops until SIGINT/SIGTERM.

use std::{
    io,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, Context as _};
use aya::maps::RingBuf;
use listendrop_common::{Reason, Settings, MAP_EVENTS};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    btf::KernelBtf,
    cli::Cli,
    counters::Counters,
    events::{self, EventStats},
    http,
    layout::Layout,
    metrics::Metrics,
    privileges,
    probes::{Probes, Sizes},
    tracefs::Tracefs,
};

/// Runs the daemon until a termination signal.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<()> {
    // Bind first: a taken port is the most common start-up error and needs no privileges.
    let listener = bind(cli.listen_address).await?;
    let served = listener.local_addr().context("reading the bound address")?;

    let btf = KernelBtf::open(&cli.btf)?;
    privileges::check().map_err(|e| anyhow!(e))?;
    let tracefs = Tracefs::find();
    let layout = Layout::resolve(&btf, tracefs.as_ref()).context(
        "this kernel lacks socket fields every listendrop hook reads; please report it \
         with `uname -r`",
    )?;

    let sizes = Sizes {
        max_listener_keys: cli.max_listener_keys,
        max_handshakes: cli.max_handshakes,
        events_bytes: cli.events_buffer_kib * 1024,
    };
    let settings = Settings {
        episode_gap_ns: cli.episode_gap_secs * 1_000_000_000,
        events_per_sec: cli.events_per_listener_per_sec,
        _pad: 0,
    };
    let mut probes = Probes::load(&layout, &btf, &cli.btf, &settings, sizes, cli.probe_kind)?;
    drop(btf);
    report(&probes);

    let counters = Mutex::new(Counters::take(&mut probes.ebpf)?);
    let ring = RingBuf::try_from(
        probes
            .ebpf
            .take_map(MAP_EVENTS)
            .context("map EVENTS missing from the eBPF object")?,
    )
    .context("map EVENTS")?;
    let stats = Arc::new(EventStats::default());
    let metrics =
        Arc::new(Metrics::new(&probes.hooks, &probes.coverage()).context("registering metrics")?);

    let scrape: http::Scrape = {
        let stats = Arc::clone(&stats);
        let metrics = Arc::clone(&metrics);
        Arc::new(move || {
            let snap = counters
                .lock()
                .map_err(|_| anyhow!("counter reader poisoned"))?
                .snapshot()?;
            metrics.update(&snap, &stats);
            Ok(metrics.render())
        })
    };

    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tracing::info!("serving metrics on http://{served}/metrics");

    let result = tokio::select! {
        () = http::serve(listener, scrape) => Ok(()),
        r = events::drain(ring, Arc::clone(&stats)) => r.context("reading drop events"),
        _ = sigint.recv() => { tracing::info!("SIGINT: detaching and exiting"); Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and exiting"); Ok(()) }
    };
    // Dropping the loaded object detaches every hook and unloads the programs and maps.
    drop(probes);
    result
}

/// Logs what was attached, what was not and why, and which drop classes that leaves
/// unobserved.
fn report(probes: &Probes) {
    for hook in &probes.hooks {
        let kind = hook.kind.as_str();
        match &hook.status {
            Ok(()) => tracing::info!("attached {kind} {}", hook.probe),
            Err(why) => tracing::info!("not attached: {kind} {}: {why}", hook.probe),
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

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => anyhow!(
                "cannot serve on {addr}: the address is already in use (another listendrop?); \
             stop that process or pick another with --web.listen-address"
            ),
            io::ErrorKind::AddrNotAvailable => anyhow!(
                "cannot serve on {addr}: no local interface has that address; use one of this \
             host's addresses or 0.0.0.0 with --web.listen-address"
            ),
            io::ErrorKind::PermissionDenied => anyhow!(
                "cannot serve on {addr}: permission denied (ports below 1024 need \
             CAP_NET_BIND_SERVICE); pick a port above 1023 with --web.listen-address"
            ),
            _ => anyhow!("cannot serve on {addr}: {e}"),
        })
}
