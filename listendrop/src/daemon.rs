//! The daemon: bind, load and attach, then serve metrics, log drops and keep the listener
//! inventory fresh until SIGINT/SIGTERM.

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _};
use aya::maps::{MapData, RingBuf};
use listendrop_common::{DropEvent, ListenerKey, Reason, MAP_EVENTS, MAP_HIGH_WATER};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::RunArgs,
    context::Context,
    counters::Counters,
    events::{self, EventStats, LogLine},
    filter::Filter,
    http,
    inventory::{
        self,
        diagnosis::{self, Facts},
        Inventory,
    },
    metrics::{ListenerLabels, Metrics},
    probes::Pinning,
    session,
    util::lock,
    web,
};

/// A listener quiet for this long is "starting to drop" again at its next drop.
const QUIET: Duration = Duration::from_secs(300);

/// Everything the tasks share.
struct Shared {
    counters: Mutex<Counters>,
    high_water: Mutex<aya::maps::HashMap<MapData, u64, u32>>,
    context: Mutex<Context>,
    metrics: Metrics,
    stats: Arc<EventStats>,
    filter: Filter,
    /// Listeners no longer in the inventory, since when (for `--stale-after-secs`).
    gone_since: Mutex<HashMap<ListenerKey, Instant>>,
    stale_after: Duration,
}

impl Shared {
    /// One scrape: the kernel counters now and the inventory families of the last pass.
    /// Reads only: any number of scrapers see the same values.
    fn scrape(&self) -> anyhow::Result<String> {
        let start = Instant::now();
        let mut counts = lock(&self.counters).snapshot()?;
        counts
            .drops
            .retain(|key, _| self.filter.allows(key.netns, key.port));
        self.metrics.update(&counts, &self.stats);
        let text = self.metrics.render();
        self.metrics.observe_scrape(start.elapsed());
        Ok(text)
    }

    /// One inventory pass (blocking: sock_diag in every namespace, /proc), then the
    /// expiry of listeners gone for longer than `--stale-after-secs`.
    fn refresh(&self, inventory: &mut Inventory) {
        let started = Instant::now();
        let snapshot = inventory.collect();
        let marks = take_high_water(&mut lock(&self.high_water));
        let counts = match lock(&self.counters).snapshot() {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("reading counters for the inventory failed: {e:#}");
                return;
            }
        };
        let now = Instant::now();
        let mut ctx = lock(&self.context);
        ctx.refresh(snapshot, &counts, marks, now);
        self.expire(&mut ctx, &counts, now);
        self.metrics.update_context(&ctx, &self.filter);
        self.metrics.observe_inventory(started.elapsed());
    }

    /// Forgets the counters of listeners that left the inventory long enough ago, so that
    /// listener churn cannot fill the kernel map nor grow the exposition without bound. A
    /// namespace that could not be read this pass does not make its listeners "gone".
    fn expire(&self, ctx: &mut Context, counts: &crate::counters::Snapshot, now: Instant) {
        let unreadable: std::collections::BTreeSet<u32> =
            ctx.inventory.skipped.iter().map(|s| s.inode).collect();
        let mut gone = lock(&self.gone_since);
        gone.retain(|key, _| counts.drops.contains_key(key));
        for key in counts.drops.keys() {
            let present = ctx.rows.contains_key(&ListenerLabels::of(key));
            if present || unreadable.contains(&key.netns) || unreadable.contains(&0) {
                gone.remove(key);
                continue;
            }
            let since = *gone.entry(*key).or_insert(now);
            if now.duration_since(since) >= self.stale_after {
                lock(&self.counters).remove(key);
                self.metrics.forget(key);
                ctx.retire(key, counts.drops[key].packets);
                gone.remove(key);
            }
        }
    }
}

/// Reads and clears the eBPF high-water marks (cookie → length).
fn take_high_water(map: &mut aya::maps::HashMap<MapData, u64, u32>) -> HashMap<u64, u32> {
    let marks: HashMap<u64, u32> = map.iter().filter_map(Result::ok).collect();
    for cookie in marks.keys() {
        let _ = map.remove(cookie);
    }
    marks
}

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
    let high_water =
        aya::maps::HashMap::try_from(probes.take_map(MAP_HIGH_WATER)?).context("map HIGH_WATER")?;
    let stats = Arc::new(EventStats::default());
    let shared = Arc::new(Shared {
        counters: Mutex::new(Counters::take(&mut probes)?),
        high_water: Mutex::new(high_water),
        context: Mutex::new(Context::default()),
        metrics: Metrics::new(&probes.hooks, &probes.coverage()).context("registering metrics")?,
        stats: Arc::clone(&stats),
        filter: Filter::from_args(&args),
        gone_since: Mutex::new(HashMap::new()),
        stale_after: Duration::from_secs(args.stale_after_secs),
    });

    // The inventory walks every namespace: a thread of its own, never a scrape's cost.
    {
        let shared = Arc::clone(&shared);
        let mut inventory = Inventory::new();
        crate::context::spawn(
            Duration::from_secs(args.inventory_interval_secs),
            move || {
                shared.refresh(&mut inventory);
            },
        )?;
    }

    let scrape: http::Scrape = {
        let shared = Arc::clone(&shared);
        Arc::new(move || shared.scrape())
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tracing::info!("serving metrics on {}://{served}/metrics", web.scheme());
    // Type=notify units start their dependents now; elsewhere this does nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut logger = DropLogger::new(Arc::clone(&shared));
    let result = tokio::select! {
        () = http::serve(listener, scrape, web) => Ok(()),
        r = events::drain(ring, stats, |e| logger.log(e)) => r.context("reading drop events"),
        _ = sigint.recv() => { tracing::info!("SIGINT: detaching and exiting"); Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and exiting"); Ok(()) }
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

/// Gives the memory of start-up (parsing the kernel's BTF and kallsyms, tens of MB) back
/// to the system: the daemon then runs in a few MB.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Logs each event with its owner, and the diagnosis when a listener starts dropping.
struct DropLogger {
    shared: Arc<Shared>,
    last_drop: HashMap<ListenerLabels, Instant>,
}

impl DropLogger {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            last_drop: HashMap::new(),
        }
    }

    fn log(&mut self, event: &DropEvent) {
        let key = &event.listener;
        if !self.shared.filter.allows(key.netns, key.port) {
            return;
        }
        let labels = ListenerLabels::of(key);
        // Copy what the lines need, so no log write happens under the lock.
        let owner = lock(&self.shared.context)
            .owner(key.netns, event.cookie, &labels)
            .cloned();
        let owner = owner.as_ref();
        tracing::info!(target: "listendrop::drop", "{}", LogLine { event, owner });
        if !Reason::from_u32(key.reason).is_some_and(Reason::is_drop) {
            return;
        }
        let now = Instant::now();
        let quiet = self
            .last_drop
            .insert(labels.clone(), now)
            .is_none_or(|last| now.duration_since(last) > QUIET);
        if quiet {
            let owner = owner.map_or_else(
                || "unknown owner".into(),
                |o| format!("{}/{}", o.pid, o.comm),
            );
            let listener = std::net::SocketAddr::new(events::listen_ip(key), key.port);
            tracing::warn!(
                target: "listendrop::diagnosis",
                "listener {listener} (netns {}, {owner}) started dropping handshakes ({})",
                key.netns,
                events::reason_label(key.reason)
            );
            // What the inventory knows of the listener, else of its namespace (a listener
            // it has not seen yet still has its namespace's sysctls).
            let facts = {
                let ctx = lock(&self.shared.context);
                ctx.rows
                    .get(&labels)
                    .and_then(|r| r.facts.clone())
                    .or_else(|| {
                        ctx.inventory
                            .namespace(key.netns)
                            .map(|n| inventory::namespace_facts(&n.sysctls))
                    })
            };
            for line in &diagnose_drop(event, facts) {
                tracing::warn!(target: "listendrop::diagnosis", "listener {listener}: {line}");
            }
        }
        // Forget listeners quiet for long, so the map stays bounded.
        if self.last_drop.len() > 10_000 {
            self.last_drop
                .retain(|_, at| now.duration_since(*at) <= QUIET);
        }
    }
}

/// The diagnosis of a listener that starts dropping: what the inventory knows of it (or
/// of its namespace) with this drop's reason and the accept queue the kernel saw when it
/// dropped.
fn diagnose_drop(event: &DropEvent, facts: Option<Facts>) -> Vec<String> {
    let Some(mut facts) = facts else {
        return Vec::new();
    };
    if event.accept_queue_max > 0 {
        facts.accept_queue_len = event.accept_queue_len;
        facts.accept_queue_limit = event.accept_queue_max;
        facts.syn_recv = event.syn_queue_len;
    } else if facts.accept_queue_limit == 0 {
        // Neither the kernel (a failed read) nor the inventory gave the queue: the rules
        // about it would talk about a limit of 0.
        return Vec::new();
    }
    *facts
        .drops
        .entry(events::reason_label(event.listener.reason).to_owned())
        .or_default() += 1;
    diagnosis::diagnose(&facts)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_is_diagnosed_with_its_reason_and_the_queue_it_met() {
        let mut event = DropEvent::ZERO;
        event.listener.reason = Reason::AckAcceptQueueFull as u32;
        event.accept_queue_len = 4;
        event.accept_queue_max = 3;
        // The inventory sampled an empty queue and knew no drop: no diagnosis of its own.
        let facts = Facts {
            accept_queue_limit: 3,
            somaxconn: 4096,
            syncookies: 1,
            synack_retries: 5,
            owner_busy: Some(false),
            ..Facts::default()
        };
        assert!(diagnosis::diagnose(&facts).is_empty());
        let lines = diagnose_drop(&event, Some(facts));
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        assert!(
            has("backlog 3 caps the accept queue below net.core.somaxconn 4096"),
            "{lines:?}"
        );
        assert!(
            has("accept queue full while the owner is idle"),
            "{lines:?}"
        );
        assert!(has("final ACKs ignored"), "{lines:?}");
        // Not even its namespace in the inventory yet: nothing to say beyond the drop.
        assert!(diagnose_drop(&event, None).is_empty());
        // No queue from the kernel nor the inventory: no sentence about a limit of 0.
        event.accept_queue_len = 0;
        event.accept_queue_max = 0;
        let namespace_only = Facts {
            somaxconn: 4096,
            ..Facts::default()
        };
        assert!(diagnose_drop(&event, Some(namespace_only)).is_empty());
    }
}
