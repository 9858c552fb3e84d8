//! The web configuration file (`--web.config.file`) in the format of the Prometheus
//! exporter-toolkit, so that the file a node_exporter uses works here too:
//! `tls_server_config` (certificate and key, client certificates and their SANs, TLS
//! versions, cipher suites, curves), `http_server_config` (extra response headers),
//! `basic_auth_users` (bcrypt hashes) and `rate_limit`.
//!
//! The semantics are exporter-toolkit's (`web/tls_config.go`, `docs/web-configuration.md`):
//! unknown keys and duplicate keys are errors, relative paths are relative to the file's
//! directory, an empty string is an unset value, a file (`cert_file`) wins over the inline
//! PEM (`cert`), client CAs need a `client_auth_type` other than `NoClientCert`, headers
//! are limited to the five exporter-toolkit allows. Where listendrop cannot do what Go
//! would, the file is refused with the reason rather than served differently:
//! - TLS 1.0 and 1.1, CBC and RSA-key-exchange cipher suites and the P-521 curve (rustls
//!   does not implement them);
//! - `client_allowed_sans` with `NoClientCert` or an empty list (Go would refuse every
//!   connection); e-mail SANs are not compared (DNS names, IP addresses and URIs are);
//! - a negative `rate_limit.burst` (Go's limiter would refuse everything).
//! - `VerifyClientCertIfGiven`/`RequireAndVerifyClientCert` without a client CA (Go falls
//!   back to the system's roots, which only a public CA's client certificates chain to);
//! - a `tls_server_config` that names no certificate at all (Go serves plain HTTP then;
//!   a file that asks for TLS settings is meant to serve TLS).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod tls;

use tls::{tls_settings, RawTls};
pub use tls::{CipherSuite, ClientAuth, Curve, Pem, TlsSettings, TlsVersion};

/// Where the format is documented, for error messages.
pub const FORMAT_DOC: &str =
    "https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md";

/// A web configuration file that cannot be used, with the file and what to change.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file itself cannot be read.
    #[error(
        "cannot read the web configuration file {}: {error}; check the path given with \
         --web.config.file and that the daemon's user may read it",
        path.display()
    )]
    Read {
        /// The web configuration file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not YAML, or not the exporter-toolkit structure (unknown or duplicate key, wrong
    /// type).
    #[error(
        "web configuration file {}: {message}; fix it to follow the exporter-toolkit format \
         ({FORMAT_DOC})",
        path.display()
    )]
    Syntax {
        /// The web configuration file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A value that is wrong, or that listendrop cannot honour.
    #[error("web configuration file {}: {key}: {problem}", path.display())]
    Invalid {
        /// The web configuration file.
        path: PathBuf,
        /// The key, as written in the file (`tls_server_config.min_version`).
        key: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// A certificate, key or CA file the configuration names cannot be read.
    #[error(
        "web configuration file {}: cannot read {key} {}: {error}; fix the path (a relative \
         path is relative to the configuration file's directory) or the file's permissions",
        path.display(),
        file.display()
    )]
    ReadNamed {
        /// The web configuration file.
        path: PathBuf,
        /// The key that names it (`tls_server_config.cert_file`).
        key: &'static str,
        /// The file named, resolved.
        file: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A certificate, key or CA that does not parse, or a key that does not match its
    /// certificate.
    #[error("web configuration file {}: {key} ({origin}): {problem}", path.display())]
    Material {
        /// The web configuration file.
        path: PathBuf,
        /// The key that gives it (`tls_server_config.key_file`).
        key: &'static str,
        /// The file it was read from, or "inline".
        origin: String,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// What a valid web configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// HTTPS, or plain HTTP when `None`.
    pub tls: Option<TlsSettings>,
    /// User → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Headers added to every response (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// `rate_limit`, when its interval is above zero.
    pub rate_limit: Option<RateLimit>,
}

/// `rate_limit`: a token bucket of `burst` requests refilled one per `interval`
/// (golang.org/x/time/rate); requests beyond it get 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time to earn one request.
    pub interval: std::time::Duration,
    /// Requests allowed at once (0: none, as in Go).
    pub burst: u32,
}

/// The headers exporter-toolkit lets a configuration add, with the values allowed (empty:
/// any).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The file as written (exporter-toolkit's `Config`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RawRateLimit>,
}

/// `rate_limit` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    /// A Go duration ("1s", "1m30s") or an integer of nanoseconds.
    interval: Option<String>,
    burst: Option<u32>,
}

/// `http_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; listendrop speaks HTTP/1.1 only.
    #[expect(dead_code, reason = "read to accept the key; HTTP/2 is never served")]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// Reads and validates the web configuration file at `path` (not the files it names: see
/// `tls::load`).
pub fn read(path: &Path) -> Result<WebConfig, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| WebConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(&text, path)
}

/// Parses and validates `text`, read from `path` (for messages and relative paths).
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
    let raw = parse_yaml(text).map_err(|message| WebConfigError::Syntax {
        path: path.to_owned(),
        message,
    })?;
    let invalid = |key: &str, problem: String| WebConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        problem,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match raw.tls_server_config {
        None => None,
        Some(raw) => tls_settings(raw, dir, &invalid)?,
    };
    Ok(WebConfig {
        path: path.to_owned(),
        tls,
        users: users(raw.basic_auth_users.unwrap_or_default(), &invalid)?,
        headers: headers(
            raw.http_server_config
                .and_then(|h| h.headers)
                .unwrap_or_default(),
            &invalid,
        )?,
        rate_limit: raw
            .rate_limit
            .map(|r| rate_limit(r, &invalid))
            .transpose()?
            .flatten(),
    })
}

/// `rate_limit`; `None` when its interval is zero (or below), which disables it, as in Go.
fn rate_limit(
    raw: RawRateLimit,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Option<RateLimit>, WebConfigError> {
    let interval = match raw.interval.as_deref() {
        None => std::time::Duration::ZERO,
        Some(text) => go_duration(text).ok_or_else(|| {
            invalid(
                "rate_limit.interval",
                format!("{text:?} is not a duration: write it as Go does, e.g. 1s, 100ms or 1m30s"),
            )
        })?,
    };
    Ok((!interval.is_zero()).then_some(RateLimit {
        interval,
        burst: raw.burst.unwrap_or(0),
    }))
}

/// `basic_auth_users`: every value must be a bcrypt hash.
fn users(
    raw: BTreeMap<String, String>,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<BTreeMap<String, String>, WebConfigError> {
    for (user, hash) in &raw {
        if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            return Err(invalid(
                &format!("basic_auth_users.{user}"),
                format!(
                    "not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ),
            ));
        }
    }
    Ok(raw)
}

/// `http_server_config.headers`: only the headers exporter-toolkit allows, with their
/// allowed values; a blank value unsets the header.
fn headers(
    raw: BTreeMap<String, String>,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Vec<(String, String)>, WebConfigError> {
    let mut headers = Vec::new();
    for (name, value) in raw {
        let key = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(invalid(
                &key,
                format!(
                    "this header can not be configured; use one of {}",
                    names.join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(invalid(
                &key,
                format!("invalid value {value:?}; expected one of {allowed:?}"),
            ));
        }
        if hyper::header::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(
                &key,
                format!("{value:?} is not a valid header value (printable ASCII only)"),
            ));
        }
        // "Unset if blank."
        if !value.is_empty() {
            headers.push((name, value));
        }
    }
    Ok(headers)
}

/// A Go `time.Duration` as yaml.v2 reads it: an integer is nanoseconds, text is
/// `time.ParseDuration`'s (a sign, then numbers with a fraction and a unit each: ns, us,
/// µs, ms, s, m, h). A negative duration is zero (Go's limiter is then off too).
fn go_duration(text: &str) -> Option<std::time::Duration> {
    if let Ok(nanos) = text.parse::<i64>() {
        return Some(std::time::Duration::from_nanos(nanos.max(0).unsigned_abs()));
    }
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&end| end > 0 && &rest[..end] != ".")?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    if negative {
        return Some(std::time::Duration::ZERO);
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// YAML into the raw structure; an empty document (or only comments) is an empty
/// configuration, as in Go.
fn parse_yaml(text: &str) -> Result<RawConfig, String> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let parsed: Option<RawConfig> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let message = e
                .to_string()
                .trim()
                .replace('\n', " ")
                // Advice to the programmer, not to the file's author.
                .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            match e.location() {
                Some(at) if !message.contains("line") => {
                    format!("line {} column {}: {message}", at.line(), at.column())
                }
                _ => message,
            }
        })?;
    Ok(parsed.unwrap_or_default())
}

/// `Some(value)` unless unset or empty (Go's zero value).
fn set(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
