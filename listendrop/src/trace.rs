//! `listendrop trace`: a live stream of dropped handshakes (and SYN-ACK retransmits of
//! handshakes whose ACK was dropped), in columns or as JSON lines. Loads its own programs,
//! so it works with or without the daemon.

use std::{
    io::Write as _,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::maps::RingBuf;
use listendrop_common::{Health, MAP_EVENTS};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::TraceArgs,
    context::view::View,
    counters::{Counters, Snapshot},
    events::{self, Event, EventStats},
    inventory::{owners::Owner, Inventory},
    probes::programs::Stats,
    session,
    util::lock,
};

/// Runs until SIGINT/SIGTERM or `--count` events.
pub fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: TraceArgs) -> anyhow::Result<()> {
    // Installed first: a signal that arrives once "waiting for drops" is printed (or while
    // the programs load) stops the trace through the final drain, never by default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut probes = session::open(&args.probes, None)?;
    let uncovered: Vec<&str> = probes
        .coverage()
        .into_iter()
        .filter(|(_, c)| !c)
        .map(|(r, _)| r.as_str())
        .collect();
    if !uncovered.is_empty() {
        eprintln!(
            "listendrop trace: not observable on this kernel: {}",
            uncovered.join(", ")
        );
    }
    let ring = RingBuf::try_from(probes.take_map(MAP_EVENTS)?).context("map EVENTS")?;
    // This session's own counters: what its programs could not hand over is reported at
    // the end.
    let counters = Counters::take(&mut probes)?;
    let programs = probes.programs();

    // Owners come from the inventory, refreshed in the background.
    let view = Arc::new(Mutex::new(Arc::new(View::default())));
    {
        let view = Arc::clone(&view);
        let mut inventory = Inventory::with_containers(args.containers.config());
        crate::daemon::spawn_inventory(Duration::from_secs(2), move || {
            let fresh = Arc::new(View::new(Arc::new(inventory.collect())));
            *lock(&view) = fresh;
        })?;
    }
    let clock = Clock::new();
    eprintln!("listendrop trace: attached; waiting for drops (Ctrl-C to stop)");
    if !args.json {
        println!(
            "{:<26} {:<11} {:<24} {:<18} {:<28} {:<24} {:<28} {:>7} FLAGS",
            "TIME", "NETNS", "LISTENER", "OWNER", "CONTAINER", "CLIENT", "REASON", "QUEUE"
        );
    }
    let mut seen = 0u64;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let handle = |event: &Event| {
        if !wanted(&args, event) || args.count.is_some_and(|n| seen >= n) {
            return;
        }
        let view = Arc::clone(&lock(&view));
        let owner = view.owner(&event.listener, event.cookie);
        let line = if args.json {
            json_line(event, owner, clock.wall(event.ktime_ns))
        } else {
            column_line(event, owner, clock.wall(event.ktime_ns))
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            let _ = done_tx.try_send(());
        }
    };
    let stop = async {
        tokio::select! {
            _ = done_rx.recv() => {}
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    // On a stop the drain prints what the ring still holds before returning.
    let stats = Arc::new(EventStats::default());
    events::drain(ring, Arc::clone(&stats), handle, stop).await?;
    eprintln!(
        "listendrop trace: {}",
        summary(
            seen,
            stats.received.load(Ordering::Relaxed),
            &counters.snapshot()?,
            &programs.stats()
        )
    );
    drop(probes);
    Ok(())
}

/// What the session showed and what it could not: events the programs could not hand
/// over (their drops are still counted by the daemon's counters, not shown here),
/// problems of the programs, and runs of the programs the kernel skipped.
fn summary(shown: u64, received: u64, counts: &Snapshot, programs: &[Stats]) -> String {
    let mut out = format!("{shown} shown of {received} events received");
    let mut lost = Vec::new();
    for (h, why) in [
        (
            Health::RingBufferFull,
            "the event ring was full (raise --events-buffer-kib)",
        ),
        (Health::RateLimited, "over --events-per-listener-per-sec"),
        (
            Health::MapFull,
            "the counter map was full (raise --max-listener-keys)",
        ),
        (Health::NoListener, "a drop without its listener"),
        (Health::Read, "a kernel read failed"),
        (Health::StaleCall, "a return probe was missed"),
    ] {
        let n = counts.health(h);
        if n > 0 {
            lost.push(format!("{n} not sent: {why}"));
        }
    }
    let missed: u64 = programs.iter().filter_map(|p| p.missed).sum();
    if missed > 0 {
        let names: Vec<&str> = programs
            .iter()
            .filter(|p| p.missed.is_some_and(|m| m > 0))
            .map(|p| p.program)
            .collect();
        lost.push(format!(
            "{missed} program runs skipped by the kernel ({}): drops in them are not shown",
            names.join(", ")
        ));
    }
    if lost.is_empty() {
        out.push_str("; nothing lost");
    } else {
        out.push_str("; ");
        out.push_str(&lost.join("; "));
    }
    out
}

fn wanted(args: &TraceArgs, e: &Event) -> bool {
    (args.port.is_empty() || args.port.contains(&e.listener.port))
        && (args.netns.is_empty() || args.netns.contains(&e.listener.netns.0))
        && (args.reason.is_empty() || args.reason.iter().any(|r| r.0 == e.reason))
}

/// Turns `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) into wall-clock time.
struct Clock {
    wall_minus_mono: Duration,
}

impl Clock {
    fn new() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            wall_minus_mono: wall.saturating_sub(mono),
        }
    }

    fn wall(&self, ktime_ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.wall_minus_mono + Duration::from_nanos(ktime_ns)
    }
}

fn flags(e: &Event) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if e.flags.new_handshake {
        flags.push("new");
    }
    if e.flags.reset {
        flags.push("reset");
    }
    if e.flags.client_believes_connected {
        flags.push("client-believes-connected");
    }
    flags
}

fn column_line(e: &Event, owner: Option<&Owner>, at: SystemTime) -> String {
    let container = owner
        .and_then(|o| o.container.as_ref())
        .map_or_else(|| "-".into(), |c| c.display_name());
    let owner = owner.map_or_else(|| "-".into(), |o| format!("{}/{}", o.pid, o.comm));
    format!(
        "{:<26} {:<11} {:<24} {:<18} {:<28} {:<24} {:<28} {:>7} {}",
        humantime::format_rfc3339_micros(at).to_string(),
        e.listener.netns.to_string(),
        e.listener.socket_addr().to_string(),
        owner,
        container,
        e.client.to_string(),
        e.reason.as_str(),
        format!("{}/{}", e.accept_queue.len, e.accept_queue.limit),
        flags(e).join(",")
    )
}

fn json_line(e: &Event, owner: Option<&Owner>, at: SystemTime) -> String {
    json!({
        "time": humantime::format_rfc3339_micros(at).to_string(),
        "netns": e.listener.netns.0,
        "family": e.listener.family().as_str(),
        "listen_addr": e.listener.addr.to_string(),
        "listen_port": e.listener.port,
        "owner": owner.map(|o| json!({"pid": o.pid, "comm": o.comm})),
        "container": owner.and_then(|o| o.container.as_ref()).map(|c| c.to_json()),
        "client_addr": e.client.ip().to_string(),
        "client_port": e.client.port(),
        "server_addr": e.server.ip().to_string(),
        "server_port": e.server.port(),
        "reason": e.reason.as_str(),
        "accept_queue_length": e.accept_queue.len,
        "accept_queue_limit": e.accept_queue.limit,
        "syn_queue_length": e.syn_queue,
        "new_handshake": e.flags.new_handshake,
        "reset": e.flags.reset,
        "client_believes_connected": e.flags.client_believes_connected,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use listendrop_common::{event::FLAG_NEW_HANDSHAKE, Addr, DropEvent, Reason, AF_INET};

    use super::*;
    use crate::inventory::containers::{ContainerIdentity, Qos, Runtime};

    #[test]
    fn json_lines_carry_the_four_tuple() {
        let mut e = DropEvent::ZERO;
        e.listener.family = AF_INET as u8;
        e.listener.addr = Addr::from_v4_octets([10, 0, 0, 1]);
        e.listener.port = 80;
        e.listener.netns = 9;
        e.listener.reason = Reason::SynQueueFull as u8;
        e.family = AF_INET;
        e.saddr = Addr::from_v4_octets([10, 0, 0, 2]);
        e.daddr = Addr::from_v4_octets([10, 0, 0, 1]);
        e.sport = 5555;
        e.dport = 80;
        e.flags = FLAG_NEW_HANDSHAKE;
        let e = events::from_raw(&e).unwrap();
        let mut owner = Owner {
            pid: 42,
            comm: "nginx".into(),
            cgroup: String::new(),
            holders: 1,
            container: None,
        };
        let line = json_line(&e, Some(&owner), SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["container"].is_null(), "a host process");
        owner.container = Some(std::sync::Arc::new(ContainerIdentity {
            runtime: Some(Runtime::Containerd),
            id: "079a806d7b7f95b366ef55b568888b7f310e062b43cb9f3d25316c5247bed9f5".into(),
            name: "nginx".into(),
            image: "nginx:1.27".into(),
            pod_name: "web-1".into(),
            pod_namespace: "shop".into(),
            pod_uid: "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10".into(),
            qos: Some(Qos::Burstable),
            rootless_user: None,
        }));
        let col = column_line(&e, Some(&owner), SystemTime::UNIX_EPOCH);
        assert!(col.contains(" shop/web-1/nginx "), "{col}");
        let line = json_line(&e, Some(&owner), SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["client_addr"], "10.0.0.2");
        assert_eq!(v["client_port"], 5555);
        assert_eq!(v["server_port"], 80);
        assert_eq!(v["reason"], "syn_queue_full");
        assert_eq!(v["owner"]["comm"], "nginx");
        assert_eq!(v["container"]["runtime"], "containerd");
        assert_eq!(v["container"]["name"], "nginx");
        assert_eq!(v["container"]["image"], "nginx:1.27");
        assert_eq!(v["container"]["pod"]["name"], "web-1");
        assert_eq!(v["container"]["pod"]["namespace"], "shop");
        assert_eq!(v["container"]["pod"]["qos"], "Burstable");
        assert_eq!(v["new_handshake"], true);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000Z");
        let col = column_line(&e, None, SystemTime::UNIX_EPOCH);
        assert!(
            col.contains("10.0.0.2:5555") && col.contains("syn_queue_full"),
            "{col}"
        );
    }

    #[test]
    fn the_summary_names_every_loss_and_its_fix() {
        let mut counts = Snapshot::default();
        assert_eq!(
            summary(3, 5, &counts, &[]),
            "3 shown of 5 events received; nothing lost"
        );
        counts.health[Health::RingBufferFull.index() as usize] = 7;
        counts.health[Health::RateLimited.index() as usize] = 2;
        let programs = [
            Stats {
                program: "kfree_skb_btf",
                runs: 0,
                run_ns: 0,
                missed: Some(4),
            },
            Stats {
                program: "retransmit_synack_btf",
                runs: 0,
                run_ns: 0,
                missed: Some(0),
            },
        ];
        assert_eq!(
            summary(3, 5, &counts, &programs),
            "3 shown of 5 events received; 7 not sent: the event ring was full (raise \
             --events-buffer-kib); 2 not sent: over --events-per-listener-per-sec; 4 program \
             runs skipped by the kernel (kfree_skb_btf): drops in them are not shown"
        );
    }
}
