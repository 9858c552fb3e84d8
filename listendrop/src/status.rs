//! `listendrop status`: every listener with its drop story, like `ss -lnt` but with the
//! owner, both queues, the drops and why, and what to do about it. Works without the
//! daemon (sock_diag and kernel counters); asks the daemon's /metrics when it runs for the
//! drops per reason and the recent rate. An SO_REUSEPORT group is one listener with its
//! members listed below it (each its own accept queue and owner).

use std::{collections::BTreeMap, io::Write as _};

use anyhow::Context as _;
use listendrop_common::Reason;
use serde_json::json;

use crate::{
    cli::StatusArgs,
    context::view::{Group, View},
    inventory::{diagnosis, owners::Owner, Inventory},
    listener::{ListenerId, Netns},
    metrics::names,
};

/// What the daemon reports per listener.
#[derive(Clone, Debug, Default)]
struct FromDaemon {
    /// Drops (and syncookies) per reason label.
    reasons: BTreeMap<String, u64>,
    rate: Option<f64>,
}

impl FromDaemon {
    fn drops(&self) -> u64 {
        self.reasons
            .iter()
            .filter(|(r, _)| Reason::from_label(r).is_some_and(Reason::is_drop))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One listener of the report.
struct Line<'a> {
    id: ListenerId,
    group: &'a Group,
    daemon: Option<FromDaemon>,
    diagnosis: Vec<String>,
}

/// Prints the status; `Ok(())` even when some namespaces could not be read (they are
/// listed).
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let snapshot =
        std::sync::Arc::new(Inventory::with_containers(args.containers.config()).collect());
    let view = View::new(std::sync::Arc::clone(&snapshot));
    let (daemon, unreachable) = if args.no_daemon {
        (None, None)
    } else {
        match from_daemon(args) {
            Ok(daemon) => (Some(daemon), None),
            Err(e) => (None, Some(e)),
        }
    };
    let lines = lines(args, &view, daemon.as_ref());
    let mut out = std::io::stdout().lock();
    if args.json {
        let skipped: Vec<_> = snapshot
            .skipped
            .iter()
            .map(|s| json!({"netns": s.inode, "error": s.error}))
            .collect();
        let doc = json!({
            "daemon": daemon.is_some(),
            "daemon_error": unreachable.as_ref().map(|e| format!("{e:#}")),
            "listeners": lines.iter().map(to_json).collect::<Vec<_>>(),
            "skipped_namespaces": skipped,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<11} {:<28} {:<20} {:<32} {:>9} {:>5} {:>8} {:>8}  REASONS",
        "NETNS", "LISTEN", "OWNER", "CONTAINER", "ACCEPTQ", "SYNQ", "DROPS", "DROPS/S"
    )?;
    for line in &lines {
        write_line(&mut out, line)?;
    }
    write_footnotes(&mut out, args, daemon.is_some(), unreachable.as_ref())?;
    for skipped in &snapshot.skipped {
        writeln!(
            out,
            "namespace {} not read: {}",
            skipped.inode, skipped.error
        )?;
    }
    Ok(())
}

/// The listeners `args` selects, with what the daemon knows of each and the diagnosis.
fn lines<'a>(
    args: &StatusArgs,
    view: &'a View,
    daemon: Option<&BTreeMap<ListenerId, FromDaemon>>,
) -> Vec<Line<'a>> {
    view.listeners
        .iter()
        .filter(|(id, _)| args.netns.is_empty() || args.netns.contains(&id.netns.0))
        .filter(|(id, _)| args.port.is_empty() || args.port.contains(&id.port))
        .map(|(id, group)| {
            let known = daemon.map(|d| d.get(id).cloned().unwrap_or_default());
            let mut facts = group.facts();
            facts.drops = known
                .as_ref()
                .map(|k| k.reasons.clone())
                .unwrap_or_default();
            Line {
                id: *id,
                group,
                daemon: known,
                diagnosis: diagnosis::diagnose(&facts),
            }
        })
        .collect()
}

/// What the table cannot show: the daemon's absence, and how to reach a secured one.
fn write_footnotes(
    out: &mut impl std::io::Write,
    args: &StatusArgs,
    reached: bool,
    unreachable: Option<&anyhow::Error>,
) -> std::io::Result<()> {
    if !reached {
        writeln!(
            out,
            "\n(listendrop daemon not reachable{}: DROPS in parentheses are the kernel's \
             per-socket sk_drops, reasons unknown; run the daemon for the drop story)",
            if args.no_daemon { ", --no-daemon" } else { "" }
        )?;
    }
    if let Some(e) = unreachable {
        // A daemon behind --web.config.file answers plain HTTP with a TLS alert and
        // anonymous requests with 401: say how to reach it.
        writeln!(
            out,
            "(asking the daemon: {e:#}; a daemon with --web.config.file is reached with \
             --daemon-url https://HOST:PORT --ca-file CA.pem and, as its configuration asks, \
             --basic-auth-file or --client-cert)"
        )?;
    }
    Ok(())
}

fn write_line(out: &mut impl std::io::Write, line: &Line) -> std::io::Result<()> {
    let group = line.group;
    let full = &group.fullest().socket;
    let reasons: Vec<String> = line
        .daemon
        .iter()
        .flat_map(|d| &d.reasons)
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    writeln!(
        out,
        "{:<11} {:<28} {:<20} {:<32} {:>9} {:>5} {:>8} {:>8}  {}",
        line.id.netns.to_string(),
        line.id.socket_addr().to_string(),
        truncate(&owner_text(group.owner()), 20),
        truncate(&container_text(group.owner()), 32),
        format!("{}/{}", full.accept_queue_len, full.accept_queue_limit),
        group.syn_queue(),
        line.daemon.as_ref().map_or_else(
            || format!("({})", group.sk_drops()),
            |d| d.drops().to_string()
        ),
        line.daemon
            .as_ref()
            .and_then(|d| d.rate)
            .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
        if reasons.is_empty() {
            "-".into()
        } else {
            reasons.join(" ")
        }
    )?;
    if group.members.len() > 1 {
        let n = group.members.len();
        for (i, m) in group.members.iter().enumerate() {
            let s = &m.socket;
            writeln!(
                out,
                "            SO_REUSEPORT member {}/{n}: accept queue {}/{}, owner {}, \
                 sk_drops {}{}",
                i + 1,
                s.accept_queue_len,
                s.accept_queue_limit,
                owner_text(m.owner.as_ref()),
                s.sk_drops.unwrap_or(0),
                if std::ptr::eq(m, group.fullest()) {
                    " (fullest)"
                } else {
                    ""
                }
            )?;
        }
    }
    for d in &line.diagnosis {
        writeln!(out, "            ! {d}")?;
    }
    Ok(())
}

fn owner_text(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "-".into(), |o| format!("{}/{}", o.pid, o.comm))
}

/// `namespace/pod/container`, a plain container's name, or `-` for a host process.
fn container_text(owner: Option<&Owner>) -> String {
    owner
        .and_then(|o| o.container.as_ref())
        .map_or_else(|| "-".into(), |c| c.display_name())
}

/// The owner's container as JSON (null for a host process).
fn container_json(owner: Option<&Owner>) -> serde_json::Value {
    owner
        .and_then(|o| o.container.as_ref())
        .map_or(serde_json::Value::Null, |c| c.to_json())
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        s.chars()
            .take(width - 1)
            .chain(std::iter::once('…'))
            .collect()
    }
}

fn to_json(line: &Line) -> serde_json::Value {
    let group = line.group;
    let full = &group.fullest().socket;
    let members: Vec<_> = group
        .members
        .iter()
        .map(|m| {
            json!({
                "cookie": m.socket.cookie,
                "inode": m.socket.inode,
                "accept_queue_length": m.socket.accept_queue_len,
                "accept_queue_limit": m.socket.accept_queue_limit,
                "sk_drops": m.socket.sk_drops,
                "owner": owner_text(m.owner.as_ref()),
                "container": container_json(m.owner.as_ref()),
            })
        })
        .collect();
    json!({
        "netns": line.id.netns.0,
        "family": line.id.family().as_str(),
        "listen_addr": line.id.addr.to_string(),
        "listen_port": line.id.port,
        "owner": owner_text(group.owner()),
        "container": container_json(group.owner()),
        "accept_queue_length": full.accept_queue_len,
        "accept_queue_limit": full.accept_queue_limit,
        "syn_queue_length": group.syn_queue(),
        "reuseport_members": group.members.len(),
        "members": members,
        "drops_total": line.daemon.as_ref().map(FromDaemon::drops),
        "sk_drops": group.sk_drops(),
        "drops_per_second_1m": line.daemon.as_ref().and_then(|d| d.rate),
        "reasons": line.daemon.as_ref().map(|d| d.reasons.clone()).unwrap_or_default(),
        "diagnosis": line.diagnosis,
    })
}

/// Drops per reason and recent rate per listener from a running daemon.
fn from_daemon(args: &StatusArgs) -> anyhow::Result<BTreeMap<ListenerId, FromDaemon>> {
    let body = crate::web::client::fetch(args)?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .context("the daemon's /metrics is not Prometheus text")?;
    let mut out: BTreeMap<ListenerId, FromDaemon> = BTreeMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => continue,
        };
        let label = |k: &str| sample.labels.get(k).unwrap_or("");
        let id = (|| {
            Some(ListenerId {
                netns: Netns(label("netns").parse().ok()?),
                addr: label("listen_addr").parse().ok()?,
                port: label("listen_port").parse().ok()?,
            })
        })();
        let Some(id) = id else { continue };
        let entry = out.entry(id).or_default();
        match sample.metric.as_str() {
            n if n == names::DROPS.name => {
                *entry.reasons.entry(label("reason").to_owned()).or_default() += value as u64;
            }
            n if n == names::SYNCOOKIES.name => {
                entry
                    .reasons
                    .insert(Reason::SyncookieSent.as_str().to_owned(), value as u64);
            }
            n if n == names::DROP_RATE.name => entry.rate = Some(value),
            _ => {}
        }
    }
    Ok(out)
}
