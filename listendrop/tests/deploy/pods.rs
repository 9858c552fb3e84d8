//! "Which pod is dropping connections": the README's PromQL query, as written there, run
//! by a real Prometheus scraping the real daemon while a real container with a pod's
//! labels (podman, named through its Docker-compatible API) drops handshakes.

use std::time::{Duration, Instant};

use crate::{
    prometheus::{now, Server},
    support::{
        containers::{self, podman::WithDaemon, HTTPD_PORT},
        daemon::{sum, Daemon},
        netns::Netns,
        require_root,
        scenarios::{stop_and_overflow, unanswering_neighbour},
    },
    tools::{self, TempDir},
};

/// The query of the README's "Which pod is dropping connections" section: its first
/// `promql` block.
fn readme_query() -> String {
    let readme = std::fs::read_to_string(tools::deploy("../README.md")).unwrap();
    let section = readme
        .split("### Which pod is dropping connections")
        .nth(1)
        .expect("the README's pod section");
    let block = section
        .split("```promql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a promql block in it");
    block.trim().to_owned()
}

/// A Prometheus server scraping `daemon` every second, storing in `dir`.
fn scraping(program: &std::path::Path, dir: &std::path::Path, daemon: &Daemon) -> Server {
    Server::start_with(
        program,
        dir,
        &format!(
            "scrape_configs:\n  - job_name: listendrop\n    static_configs:\n      \
             - targets: ['{}']\n",
            daemon.addr
        ),
    )
}

/// The series of `query`'s result for `pod`, once its value is above 0 (20 s at most).
fn wait_for_pod(prom: &Server, query: &str, pod: &str) -> Vec<(serde_json::Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = prom.query(query);
        let ours: Vec<_> = result
            .iter()
            .filter(|(labels, _)| labels["pod"] == pod)
            .cloned()
            .collect();
        if ours.iter().any(|(_, v)| *v > 0.0) {
            return ours;
        }
        assert!(
            Instant::now() < deadline,
            "{query}\nnever named the pod with a rate above 0: {result:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn readme_query_names_the_pod_that_drops_connections() {
    let test = "readme_query_names_the_pod_that_drops_connections";
    if !require_root(test) {
        return;
    }
    let Some(program) = tools::require(test, "prometheus", "prometheus") else {
        return;
    };
    if !containers::available(test, &["podman", "runc", "conmon", "busybox"]) {
        return;
    }
    let setup = WithDaemon::start("promql");
    let (daemon, podman, image, uid) = (&setup.daemon, &setup.podman, &setup.image, &setup.uid);
    let dir = TempDir::new("promql");
    let prom = scraping(&program, dir.path(), daemon);
    // A pod's container as cri-dockerd runs them: the pod's names are labels.
    let (container, _) = podman.run_in_pod(image, ("shop", "checkout-7d9f", uid), "web");
    let ns = Netns::attach("promql", container.pid);
    unanswering_neighbour(&ns, 71);
    let netns = ns.inode.to_string();
    let named = |m: &[prometheus_parse::Sample]| {
        sum(
            m,
            "listendrop_listener_info",
            &[("netns", &netns), ("pod", "checkout-7d9f")],
        ) == 1.0
    };
    assert!(
        daemon.wait_for_metric(Duration::from_secs(30), named),
        "the daemon never named the pod"
    );
    // Prometheus scrapes the daemon (its first scrape comes seconds after start), then
    // drops spread over several scrapes, so that rate() sees them rise.
    prom.wait_for_scrape_after(now());
    let done = stop_and_overflow(
        &ns,
        container.pid,
        HTTPD_PORT,
        71,
        8,
        Duration::from_millis(500),
    );
    prom.wait_for_scrape_after(now());

    let query = readme_query();
    let ours = wait_for_pod(&prom, &query, "checkout-7d9f");
    println!("{query}\n= {ours:?}");
    assert_eq!(ours.len(), 1, "one series for the pod's listener: {ours:?}");
    let labels = &ours[0].0;
    assert_eq!(labels["pod_namespace"], "shop");
    assert_eq!(labels["container"], "web");
    assert_eq!(labels["listen_port"], HTTPD_PORT.to_string());
    assert_eq!(labels["reason"], "ack_accept_queue_full");
    // And Prometheus holds exactly the kernel's count for the pod's namespace.
    let stored = prom.query(&format!("sum(listendrop_drops_total{{netns=\"{netns}\"}})"));
    assert_eq!(stored.first().map(|s| s.1), Some(done.overflows as f64));
    drop(done);
    podman.remove(&container.id);
    drop(prom);
    assert!(setup.daemon.stop().success());
}
