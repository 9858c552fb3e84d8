//! `listendrop status`: every listener with its drop story, like `ss -lnt` but with the
//! owner, both queues, the drops and why, and what to do about it. Works without the
//! daemon (sock_diag and kernel counters); asks the daemon's /metrics when it runs for the
//! drops per reason and the recent rate.

use std::{collections::BTreeMap, io::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::{
    cli::StatusArgs,
    context::rows,
    inventory::{diagnosis, Inventory},
    metrics::ListenerLabels,
};

/// What the daemon reports per listener.
#[derive(Debug, Default)]
struct FromDaemon {
    drops: BTreeMap<String, u64>,
    rate: Option<f64>,
}

/// One line of the table.
#[derive(Debug)]
struct Line {
    labels: ListenerLabels,
    owner: String,
    accept: (u32, u32),
    syn: u32,
    drops: Option<u64>,
    sk_drops: u64,
    rate: Option<f64>,
    reasons: BTreeMap<String, u64>,
    diagnosis: Vec<String>,
}

/// Prints the status; `Ok(())` even when some namespaces could not be read (they are
/// listed).
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let snapshot = Inventory::new().collect();
    let (daemon, unreachable) = if args.no_daemon {
        (None, None)
    } else {
        match from_daemon(args) {
            Ok(daemon) => (Some(daemon), None),
            Err(e) => (None, Some(e)),
        }
    };
    let mut lines = Vec::new();
    for ns in &snapshot.namespaces {
        if !args.netns.is_empty() && !args.netns.contains(&ns.namespace.inode) {
            continue;
        }
        for (labels, row) in rows(std::slice::from_ref(ns)) {
            let port: u16 = labels.listen_port.parse().unwrap_or(0);
            if !args.port.is_empty() && !args.port.contains(&port) {
                continue;
            }
            let known = daemon.as_ref().map(|d| {
                d.get(&labels)
                    .map_or_else(FromDaemon::default, |f| FromDaemon {
                        drops: f.drops.clone(),
                        rate: f.rate,
                    })
            });
            let reasons = known.as_ref().map(|k| k.drops.clone()).unwrap_or_default();
            let first = ns
                .listeners
                .iter()
                .find(|l| l.socket.port == port && l.socket.addr.to_string() == labels.listen_addr);
            let mut facts = first.map(|l| l.facts(&ns.sysctls)).unwrap_or_default();
            facts.accept_queue_len = row.accept_queue_len;
            facts.accept_queue_limit = row.accept_queue_limit;
            facts.drops = reasons.clone();
            lines.push(Line {
                owner: row
                    .owners
                    .first()
                    .map_or_else(|| "-".into(), |o| format!("{}/{}", o.pid, o.comm)),
                accept: (row.accept_queue_len, row.accept_queue_limit),
                syn: row.syn_queue_len,
                drops: known.as_ref().map(|k| {
                    k.drops
                        .iter()
                        .filter(|(r, _)| is_drop(r))
                        .map(|(_, n)| n)
                        .sum()
                }),
                sk_drops: row.sk_drops,
                rate: known.as_ref().and_then(|k| k.rate),
                reasons,
                diagnosis: diagnosis::diagnose(&facts),
                labels,
            });
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let listeners: Vec<_> = lines.iter().map(to_json).collect();
        let skipped: Vec<_> = snapshot
            .skipped
            .iter()
            .map(|s| json!({"netns": s.inode, "error": s.error}))
            .collect();
        let doc = json!({
            "daemon": daemon.is_some(),
            "daemon_error": unreachable.as_ref().map(|e| format!("{e:#}")),
            "listeners": listeners,
            "skipped_namespaces": skipped,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<11} {:<28} {:<20} {:>9} {:>5} {:>8} {:>8}  REASONS",
        "NETNS", "LISTEN", "OWNER", "ACCEPTQ", "SYNQ", "DROPS", "DROPS/S"
    )?;
    for line in &lines {
        let listen = SocketAddr::new(
            line.labels
                .listen_addr
                .parse()
                .unwrap_or([0, 0, 0, 0].into()),
            line.labels.listen_port.parse().unwrap_or(0),
        );
        let reasons: Vec<String> = line
            .reasons
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        writeln!(
            out,
            "{:<11} {:<28} {:<20} {:>9} {:>5} {:>8} {:>8}  {}",
            line.labels.netns,
            listen.to_string(),
            truncate(&line.owner, 20),
            format!("{}/{}", line.accept.0, line.accept.1),
            line.syn,
            line.drops
                .map_or_else(|| format!("({})", line.sk_drops), |d| d.to_string()),
            line.rate.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            if reasons.is_empty() {
                "-".into()
            } else {
                reasons.join(" ")
            }
        )?;
        for d in &line.diagnosis {
            writeln!(out, "            ! {d}")?;
        }
    }
    if daemon.is_none() {
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
    for skipped in &snapshot.skipped {
        writeln!(
            out,
            "namespace {} not read: {}",
            skipped.inode, skipped.error
        )?;
    }
    Ok(())
}

fn is_drop(label: &str) -> bool {
    listendrop_common::Reason::from_label(label).is_some_and(listendrop_common::Reason::is_drop)
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
    json!({
        "netns": line.labels.netns.parse::<u64>().unwrap_or(0),
        "family": line.labels.family,
        "listen_addr": line.labels.listen_addr,
        "listen_port": line.labels.listen_port.parse::<u16>().unwrap_or(0),
        "owner": line.owner,
        "accept_queue_length": line.accept.0,
        "accept_queue_limit": line.accept.1,
        "syn_queue_length": line.syn,
        "drops_total": line.drops,
        "sk_drops": line.sk_drops,
        "drops_per_second_1m": line.rate,
        "reasons": line.reasons,
        "diagnosis": line.diagnosis,
    })
}

/// Drops per reason and recent rate per listener from a running daemon.
fn from_daemon(args: &StatusArgs) -> anyhow::Result<BTreeMap<ListenerLabels, FromDaemon>> {
    let body = fetch(args)?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .context("the daemon's /metrics is not Prometheus text")?;
    let mut out: BTreeMap<ListenerLabels, FromDaemon> = BTreeMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => continue,
        };
        let l = |k: &str| sample.labels.get(k).unwrap_or("").to_owned();
        let labels = ListenerLabels {
            netns: l("netns"),
            family: if l("family") == "ipv6" {
                "ipv6"
            } else {
                "ipv4"
            },
            listen_addr: l("listen_addr"),
            listen_port: l("listen_port"),
        };
        let entry = || FromDaemon::default();
        match sample.metric.as_str() {
            "listendrop_drops_total" => {
                *out.entry(labels)
                    .or_insert_with(entry)
                    .drops
                    .entry(l("reason"))
                    .or_default() += value as u64;
            }
            "listendrop_syncookies_sent_total" => {
                out.entry(labels)
                    .or_insert_with(entry)
                    .drops
                    .insert("syncookie_sent".into(), value as u64);
            }
            "listendrop_recent_drop_rate" => {
                out.entry(labels).or_insert_with(entry).rate = Some(value)
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The daemon's /metrics: plain HTTP to --daemon, or --daemon-url with the TLS and
/// credentials the options give.
fn fetch(args: &StatusArgs) -> anyhow::Result<String> {
    use ureq::tls::{parse_pem, ClientCert, PemItem, RootCerts, TlsConfig};
    let url = match &args.daemon_url {
        Some(base) => format!("{}/metrics", base.trim_end_matches('/')),
        None => format!("http://{}/metrics", args.daemon),
    };
    let pem = |path: &std::path::Path| -> anyhow::Result<Vec<PemItem<'static>>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        parse_pem(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{} is not PEM", path.display()))
    };
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &args.ca_file {
        let roots: Vec<_> = pem(ca)?
            .into_iter()
            .filter_map(|item| match item {
                PemItem::Certificate(cert) => Some(cert),
                _ => None,
            })
            .collect();
        if roots.is_empty() {
            bail!("--ca-file {}: no certificate in it", ca.display());
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
    } else if url.starts_with("https:") {
        bail!(
            "an https:// --daemon-url needs --ca-file, the CA that signed the daemon's certificate"
        );
    }
    if let Some(cert) = &args.client_cert {
        let mut items = pem(cert)?;
        if let Some(key) = &args.client_key {
            items.extend(pem(key)?);
        }
        let (mut chain, mut key) = (Vec::new(), None);
        for item in items {
            match item {
                PemItem::Certificate(c) => chain.push(c),
                PemItem::PrivateKey(k) => key = Some(k),
                _ => {}
            }
        }
        let key = key.with_context(|| {
            format!(
                "no private key in {} (give it with --client-key)",
                cert.display()
            )
        })?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    // ureq's rustls without a provider of its own: ring's, as the daemon's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .tls_config(tls.build())
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(credentials) = basic_auth(args)? {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD
            .encode(credentials.trim_end_matches(['\r', '\n']));
        request = request.header("Authorization", &format!("Basic {token}"));
    }
    let mut resp = request.call().with_context(|| format!("GET {url}"))?;
    Ok(resp.body_mut().read_to_string()?)
}

/// `user:password` from --basic-auth-file, else from LISTENDROP_BASIC_AUTH.
fn basic_auth(args: &StatusArgs) -> anyhow::Result<Option<String>> {
    let credentials = match &args.basic_auth_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --basic-auth-file {}", path.display()))?,
        None => match std::env::var("LISTENDROP_BASIC_AUTH") {
            Ok(value) => value,
            Err(_) => return Ok(None),
        },
    };
    if !credentials.contains(':') {
        bail!("basic auth credentials must read user:password");
    }
    Ok(Some(credentials))
}
