//! What the daemon costs and how exact it stays: start-up, a host's connection rate, a
//! flood against the kernel's counters, and /metrics with 10,000 listeners.

use std::time::{Duration, Instant};

use listendrop_testsupport::{
    daemon::{sum, Daemon},
    netns::{delta, Netns},
    scenarios::overflow_flood,
    sockets::listen,
};

use crate::{
    measure::{median_of, per_call, prog_stats, programs_of, reset_peak, spread, usage},
    report::{mark, Report},
    workload::connection_rate,
};

/// Exec to every hook attached (the daemon serves only after attaching), median of 5.
pub fn start_up(report: &mut Report) {
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let d = Daemon::start(&[]);
        starts.push(t.elapsed());
        d.stop();
    }
    starts.sort();
    let start = starts[starts.len() / 2];
    report.row(
        "start-up to all hooks attached (median of 5)",
        format!("{:.0} ms", start.as_secs_f64() * 1e3),
        "< 300 ms",
        mark(start < Duration::from_millis(300)),
    );
}

/// Connection rate with and without the daemon: one namespace (creating and destroying
/// namespaces loads the kernel in the background), alternating, median of seven each.
pub fn connection_overhead(report: &mut Report) {
    let ns = Netns::new("rate");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        without.push(connection_rate(&ns, 2));
        let d = Daemon::start(&[]);
        // Past its start-up (the first inventory pass walks every namespace).
        std::thread::sleep(Duration::from_secs(1));
        with.push(connection_rate(&ns, 2));
        drop(d);
    }
    let noise = spread(&without);
    let (without, with) = (median_of(&mut without), median_of(&mut with));
    let overhead = (without - with) / without * 100.0;
    report.row(
        "loopback connect/accept/close rate (median of 7 × 2 s each, alternating)",
        format!(
            "{without:.0}/s without, {with:.0}/s with ({overhead:+.2} %; runs without the \
             daemon alone differ by up to {noise:.0} %)"
        ),
        "< 1 % slower",
        mark(overhead < 1.0),
    );
}

/// ACK-time overflows as fast as raw packets go, for 30 s: counts against the kernel's,
/// the events' fate, the daemon's CPU and memory.
pub fn flood(report: &mut Report, ns: &Netns) {
    let daemon = Daemon::start(&[]);
    let progs = programs_of(daemon.pid());
    let before_kernel = ns.nstat();
    let (cpu0, startup_peak) = usage(daemon.pid());
    reset_peak(daemon.pid());
    let before: Vec<(u64, (u64, u64))> =
        progs.iter().map(|(id, _)| (*id, prog_stats(*id))).collect();
    let secs = 30;
    let (sent, server) = overflow_flood(ns, secs, 0);
    let after_kernel = ns.nstat();
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, peak) = usage(daemon.pid());
    let overflows = delta(&before_kernel, &after_kernel, "TcpExtListenOverflows");
    let metrics = daemon.metrics();
    let counted = sum(
        &metrics,
        "listendrop_drops_total",
        &[
            ("netns", &ns.inode.to_string()),
            ("listen_port", &server.port().to_string()),
        ],
    ) as u64;
    let events = sum(&metrics, "listendrop_events_total", &[]) as u64;
    let lost = sum(&metrics, "listendrop_events_lost_total", &[]) as u64;
    report.row(
        &format!("flood: {sent} raw ACK-time overflows in {secs} s"),
        format!(
            "{:.0} drops/s; listendrop {counted} vs kernel ListenOverflows {overflows}",
            overflows as f64 / secs as f64
        ),
        "equal",
        mark(counted == overflows),
    );
    report.row(
        "flood: events",
        format!("{events} delivered, {lost} not (rate limit and ring buffer)"),
        "losses counted",
        mark(events + lost > 0),
    );
    let cpu = (cpu1 - cpu0) / secs as f64 * 100.0;
    report.row(
        "flood: daemon CPU",
        format!("{cpu:.1} % of one core"),
        "< 100 %",
        mark(cpu < 100.0),
    );
    let overall = startup_peak.max(peak);
    report.row(
        "daemon peak RSS, start-up included",
        format!(
            "{:.1} MB (start-up {:.1} MB, during the flood {:.1} MB)",
            overall as f64 / 1e6,
            startup_peak as f64 / 1e6,
            peak as f64 / 1e6
        ),
        "< 15 MB",
        mark(overall < 15_000_000),
    );
    for (id, before) in before {
        let after = prog_stats(id);
        if after.1 - before.1 > 1000 {
            let name = progs.iter().find(|(i, _)| *i == id).map_or("?", |(_, n)| n);
            report.row(
                &format!("{name} program during the flood (nearly every call a match)"),
                format!(
                    "{:.1} ns per call over {} calls",
                    per_call(before, after),
                    after.1 - before.1
                ),
                "see the side-by-side row",
                "-",
            );
        }
    }
}

/// /metrics with 10,000 listening sockets: the daemon's own render time and a GET.
pub fn render(report: &mut Report) {
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65536, 65536);
    let big = Netns::new("bench10k");
    let listeners: Vec<_> = big.enter(|| {
        (0..10_000)
            .map(|_| listen("127.0.0.1:0".parse().unwrap(), 16, None))
            .collect()
    });
    let daemon = Daemon::start(&["--inventory-interval-secs", "2"]);
    let netns = big.inode.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(
        &daemon.metrics(),
        "listendrop_accept_queue_limit",
        &[("netns", &netns)],
    ) < 10_000.0 * 16.0
    {
        assert!(
            Instant::now() < deadline,
            "the inventory never showed 10,000 listeners"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (mut times, mut renders, mut body_len) = (Vec::new(), Vec::new(), 0);
    for _ in 0..20 {
        let t = Instant::now();
        let (status, body) = daemon.get("/metrics");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(status, 200);
        assert!(body.len() > 1_000_000);
        body_len = body.len();
        // The daemon's own measure of the previous render.
        if let Some(r) = body
            .lines()
            .find_map(|l| l.strip_prefix("listendrop_scrape_duration_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
        {
            renders.push(r);
        }
    }
    let (get, render) = (median_of(&mut times), median_of(&mut renders));
    let inventory = sum(
        &daemon.metrics(),
        "listendrop_inventory_duration_seconds",
        &[],
    );
    report.row(
        "/metrics render with 10,000 listening sockets (median of 20)",
        format!(
            "{:.2} ms render per scrape, {:.1} ms GET over loopback ({:.1} MB); the \
             inventory pass that reads and pre-renders the listeners takes {:.0} ms every \
             --inventory-interval-secs, off the scrape path",
            render * 1e3,
            get * 1e3,
            body_len as f64 / 1e6,
            inventory * 1e3
        ),
        "< 5 ms",
        mark(render < 0.005),
    );
    drop(daemon);
    drop(listeners);
}
