//! The daemon: bind, load and attach, then serve metrics and log drops until
//! SIGINT/SIGTERM.

use std::{
    io,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, Context as _};
use aya::maps::RingBuf;
use listendrop_common::MAP_EVENTS;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::RunArgs,
    counters::Counters,
    events::{self, EventStats},
    filter::Filter,
    http,
    metrics::Metrics,
    session,
};

/// Runs the daemon until a termination signal.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    // Bind first: a taken port is the most common start-up error and needs no privileges.
    let listener = bind(args.listen_address).await?;
    let served = listener.local_addr().context("reading the bound address")?;

    let mut probes = session::open(&args.probes)?;
    session::report(&probes);

    let filter = Arc::new(Filter::from_args(&args));
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
        let filter = Arc::clone(&filter);
        Arc::new(move || {
            let mut snap = counters
                .lock()
                .map_err(|_| anyhow!("counter reader poisoned"))?
                .snapshot()?;
            snap.drops
                .retain(|key, _| filter.allows(key.netns, key.port));
            metrics.update(&snap, &stats);
            Ok(metrics.render())
        })
    };

    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tracing::info!("serving metrics on http://{served}/metrics");
    // Type=notify units start their dependents now; elsewhere this does nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let result = tokio::select! {
        () = http::serve(listener, scrape) => Ok(()),
        r = events::drain(ring, Arc::clone(&stats), Arc::clone(&filter)) => r.context("reading drop events"),
        _ = sigint.recv() => { tracing::info!("SIGINT: detaching and exiting"); Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and exiting"); Ok(()) }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Dropping the loaded object detaches every hook and unloads the programs and maps.
    drop(probes);
    result
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
