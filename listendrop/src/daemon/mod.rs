//! The daemon: bind, load and attach, then serve metrics, log drops and keep the listener
//! inventory fresh until SIGINT/SIGTERM.

mod logger;
mod state;

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, Context as _};
use aya::maps::RingBuf;
use listendrop_common::{MAP_EVENTS, MAP_HIGH_WATER};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::RunArgs,
    context::Context,
    counters::Counters,
    events::{self, EventStats},
    filter::Filter,
    http,
    inventory::Inventory,
    metrics::{kernel::KernelCollector, Metrics},
    probes::Pinning,
    session, web,
};
use logger::DropLogger;
use state::Shared;

/// Runs the daemon until a termination signal.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Two workers: a slow scrape or log write never holds up draining events (nor
    // /healthz), and the whole daemon stays within two threads plus the inventory's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    // Bind first: a taken port is the most common start-up error and needs no privileges.
    let listener = bind(args.listen_address).await?;
    let served = listener.local_addr().context("reading the bound address")?;
    // A web configuration that cannot be used stops the daemon here, with the reason.
    let web = web::Endpoint::new(args.web_config_file.as_deref())?;
    tracing::info!("{}", web.describe());

    let pinning = (!args.no_pin).then(|| Pinning {
        dir: args.pin_dir.clone(),
    });
    let mut probes = session::open(&args.probes, pinning.as_ref())?;
    session::report(&probes);
    release_startup_memory();

    let ring = RingBuf::try_from(probes.take_map(MAP_EVENTS)?).context("map EVENTS")?;
    let stats = Arc::new(EventStats::default());
    let shared = Arc::new(shared(&args, &mut probes, Arc::clone(&stats))?);

    // The inventory walks every namespace: a thread of its own, never a scrape's cost.
    {
        let shared = Arc::clone(&shared);
        let mut inventory = Inventory::with_containers(args.containers.config());
        spawn_inventory(
            Duration::from_secs(args.inventory_interval_secs),
            move || shared.refresh(&mut inventory),
        )?;
    }

    let scrape: http::Scrape = {
        let shared = Arc::clone(&shared);
        Arc::new(move || Ok(shared.scrape()))
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tracing::info!("serving metrics on {}://{served}/metrics", web.scheme());
    // Type=notify units start their dependents now; elsewhere this does nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut logger = DropLogger::new(Arc::clone(&shared));
    let shutdown = async {
        let signal = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        tracing::info!("{signal}: detaching and exiting");
    };
    // On a signal the drain logs what the ring still holds, then returns.
    let result = tokio::select! {
        () = http::serve(listener, scrape, web, args.web_max_connections) => Ok(()),
        r = events::drain(ring, stats, |e| logger.log(e), shutdown) => r.context("reading drop events"),
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(dir) = &probes.pinned {
        tracing::info!(
            "the hooks stay attached and counting, pinned in {}: a restart resumes them; \
             `listendrop unpin` removes them",
            dir.display()
        );
    }
    // Dropping the loaded object detaches every unpinned hook and unloads what no pin holds.
    drop(probes);
    result
}

/// What the tasks share: the counter maps, the collector that renders them, the context.
fn shared(
    args: &RunArgs,
    probes: &mut crate::probes::Probes,
    stats: Arc<EventStats>,
) -> anyhow::Result<Shared> {
    let high_water =
        aya::maps::HashMap::try_from(probes.take_map(MAP_HIGH_WATER)?).context("map HIGH_WATER")?;
    let counters = Arc::new(Mutex::new(Counters::take(probes)?));
    let pass = Arc::new(Mutex::new(Arc::new(Vec::new())));
    let filter = Filter::from_args(args);
    let collector = KernelCollector::new(
        Arc::clone(&counters) as _,
        Arc::new(probes.programs()),
        Arc::clone(&pass),
        stats,
        filter.clone(),
    )
    .context("registering metrics")?;
    Ok(Shared {
        counters,
        high_water: Mutex::new(high_water),
        context: Mutex::new(Context::default()),
        pass,
        metrics: Metrics::new(&probes.hooks, &probes.coverage(), collector)
            .context("registering metrics")?,
        filter,
        gone_since: Mutex::new(HashMap::new()),
        stale_after: Duration::from_secs(args.stale_after_secs),
    })
}

/// Runs `pass` now and then every `interval` on a thread of its own ("inventory"), for
/// the life of the process.
pub fn spawn_inventory(
    interval: Duration,
    mut pass: impl FnMut() + Send + 'static,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("inventory".into())
        .spawn(move || loop {
            pass();
            std::thread::sleep(interval);
        })
        .context("starting the inventory thread")?;
    Ok(())
}

/// Gives the memory of start-up (parsing the kernel's BTF and kallsyms, tens of MB) back
/// to the system: the daemon then runs in a few MB.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
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
