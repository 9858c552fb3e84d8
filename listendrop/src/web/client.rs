//! The client side of the web configuration: how `listendrop status` reaches a daemon's
//! /metrics, in plain HTTP or over TLS with the CA, client certificate and basic-auth
//! credentials its options give (never a password on the command line).

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context as _};

use crate::cli::StatusArgs;

/// The daemon's /metrics: plain HTTP to --daemon, or --daemon-url with the TLS and
/// credentials the options give.
pub fn fetch(args: &StatusArgs) -> anyhow::Result<String> {
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
