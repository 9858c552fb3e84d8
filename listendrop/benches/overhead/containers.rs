//! The listener inventory on a container host: 200 real podman containers (`--network
//! none`: each its own namespace, its own busybox httpd listening), from an image built
//! locally. One inventory pass with container identity and one without, cold (the first
//! pass: owners scanned, every container resolved) and steady (the median of later
//! passes: nothing new, a cache lookup per owner). Everything is removed afterwards.

use std::time::{Duration, Instant};

use listendrop::inventory::{containers, Inventory, Snapshot};
use listendrop_testsupport::containers::{podman::Podman, HTTPD_PORT};

/// How many containers.
const CONTAINERS: usize = 200;

/// One measure of the report: (what, result, target, verdict).
pub type Row = (String, String, String, String);

/// Listeners of our containers in `snapshot`: (all, named with their image).
fn ours(snapshot: &Snapshot, ids: &[String]) -> (usize, usize) {
    let owners: Vec<_> = snapshot
        .namespaces
        .iter()
        .flat_map(|n| &n.listeners)
        .filter(|l| l.socket.port == HTTPD_PORT)
        .filter_map(|l| l.owner.as_ref()?.container.as_ref())
        .filter(|c| ids.contains(&c.id))
        .collect();
    let named = owners
        .iter()
        .filter(|c| !c.name.is_empty() && !c.image.is_empty())
        .count();
    (owners.len(), named)
}

/// The first pass of a fresh inventory and the median of `steady` passes after it.
fn passes(mut inventory: Inventory, steady: usize) -> (Duration, Duration, Snapshot) {
    let t = Instant::now();
    let first = inventory.collect();
    let cold = t.elapsed();
    let mut times: Vec<Duration> = (0..steady)
        .map(|_| {
            let t = Instant::now();
            inventory.collect();
            t.elapsed()
        })
        .collect();
    times.sort();
    (cold, times[times.len() / 2], first)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Runs the measure; returns the report's rows.
pub fn inventory_with_containers() -> Vec<Row> {
    let mut podman = Podman::new("bench");
    let image = podman.build_httpd();
    let socket = podman.serve_api().to_owned();
    let config = containers::Config {
        docker_socket: None,
        podman_socket: Some(socket),
        api_timeout: Duration::from_secs(10),
        ..containers::Config::default()
    };

    let started = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..CONTAINERS / 4)
                        .map(|_| podman.run("bench", &["--network", "none"], &image).id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a starter thread"))
            .collect()
    });
    let start_time = started.elapsed();
    // Every httpd listening (a pass sees them all).
    let deadline = Instant::now() + Duration::from_secs(120);
    while ours(&Inventory::without_containers().collect(), &ids).0 < CONTAINERS {
        assert!(
            Instant::now() < deadline,
            "the {CONTAINERS} containers never all listened"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let (cold_off, steady_off, _) = passes(Inventory::without_containers(), 5);
    let (cold_on, steady_on, first) = passes(Inventory::with_containers(config), 5);
    let (seen, named) = ours(&first, &ids);
    let listeners: usize = first.namespaces.iter().map(|n| n.listeners.len()).sum();
    let namespaces = first.namespaces.len();
    let ok =
        named == CONTAINERS && steady_on.as_secs_f64() <= steady_off.as_secs_f64() * 1.1 + 0.005;
    let rows = vec![(
        format!(
            "inventory pass with {CONTAINERS} podman containers ({namespaces} namespaces, \
             {listeners} listeners; containers started in {:.0} s)",
            start_time.as_secs_f64()
        ),
        format!(
            "first pass {} with container identity ({seen} owners in containers, {named} \
             named with their image: bundles through conmon, one API request) vs {} \
             without; then {} vs {} per pass (median of 5)",
            ms(cold_on),
            ms(cold_off),
            ms(steady_on),
            ms(steady_off)
        ),
        "resolved once per container; a steady pass within 10 % (+5 ms) of one without".to_owned(),
        if ok { "met" } else { "**missed**" }.to_owned(),
    )];
    // Removing 200 containers takes a while: the podman guard does it, with the images,
    // its API server and its storage.
    drop(podman);
    rows
}
