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
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

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

/// `tls_server_config`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain (`cert_file` or `cert`).
    pub cert: Pem,
    /// Its private key (`key_file` or `key`).
    pub key: Pem,
    /// The CAs client certificates must chain to (`client_ca_file` or `client_ca`).
    pub client_ca: Option<Pem>,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// `min_version`.
    pub min_version: TlsVersion,
    /// `max_version`.
    pub max_version: TlsVersion,
    /// `cipher_suites` for TLS 1.2, in the file's order; empty: rustls' defaults. (TLS 1.3
    /// suites are not configurable, as in Go: their names are accepted and change nothing.)
    pub cipher_suites: Vec<CipherSuite>,
    /// `prefer_server_cipher_suites` (default true): the server's order of the suites wins.
    pub prefer_server_cipher_suites: bool,
    /// `curve_preferences`, in order; empty: rustls' defaults.
    pub curves: Vec<Curve>,
    /// `client_allowed_sans`: a client certificate must have one of these DNS names, IP
    /// addresses or URIs; empty: no such check.
    pub client_allowed_sans: Vec<String>,
}

/// PEM text from a file or inline in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file (resolved against the configuration file's directory).
    File(PathBuf),
    /// The text itself (a key is a secret: never printed).
    Inline(String),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

impl Pem {
    /// The file, or "inline", for messages.
    pub fn origin(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Inline(_) => "inline".to_owned(),
        }
    }
}

/// `client_auth_type`: Go's `tls.ClientAuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate asked for (the default).
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified (`RequireClientCert` is its old name).
    RequireAnyClientCert,
    /// Verified against the client CA when the client sends one.
    VerifyClientCertIfGiven,
    /// Required and verified against the client CA: the only secure choice.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// Whether a client certificate is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

/// A TLS protocol version rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// A TLS 1.2 cipher suite, by its Go (IANA) name, that rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    EcdheEcdsaAes128Gcm,
    /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    EcdheEcdsaAes256Gcm,
    /// TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    EcdheEcdsaChacha20,
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    EcdheRsaAes128Gcm,
    /// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    EcdheRsaAes256Gcm,
    /// TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    EcdheRsaChacha20,
}

/// Go's names of the TLS 1.2 suites rustls implements.
const TLS12_SUITES: [(&str, CipherSuite); 6] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheEcdsaAes128Gcm,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheEcdsaAes256Gcm,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheEcdsaChacha20,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheRsaAes128Gcm,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheRsaAes256Gcm,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheRsaChacha20,
    ),
];

/// TLS 1.3 suites: valid names in Go, where they cannot be configured either.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go's `tls.CipherSuites()` lists that rustls does not implement.
const GO_ONLY_SUITES: [&str; 8] = [
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
];

/// An elliptic curve (key exchange group) that rustls (ring) implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// X25519
    X25519,
    /// CurveP256 (secp256r1)
    P256,
    /// CurveP384 (secp384r1)
    P384,
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

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
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
    let rate_limit = match raw.rate_limit {
        None => None,
        Some(limit) => {
            let interval = match limit.interval.as_deref() {
                None => std::time::Duration::ZERO,
                Some(text) => go_duration(text).ok_or_else(|| {
                    invalid(
                        "rate_limit.interval",
                        format!(
                            "{text:?} is not a duration: write it as Go does, e.g. 1s, 100ms \
                             or 1m30s"
                        ),
                    )
                })?,
            };
            // An interval of zero (or below) disables the limit, as in Go.
            (!interval.is_zero()).then_some(RateLimit {
                interval,
                burst: limit.burst.unwrap_or(0),
            })
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match raw.tls_server_config {
        None => None,
        Some(raw) => tls_settings(raw, dir, &invalid)?,
    };
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            return Err(invalid(
                &format!("basic_auth_users.{user}"),
                format!(
                    "not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ),
            ));
        }
        users.insert(user, hash);
    }
    let mut headers = Vec::new();
    for (name, value) in raw
        .http_server_config
        .and_then(|h| h.headers)
        .unwrap_or_default()
    {
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
    Ok(WebConfig {
        path: path.to_owned(),
        tls,
        users,
        headers,
        rate_limit,
    })
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

/// `tls_server_config`: `None` when it is empty (plain HTTP, as in Go).
fn tls_settings(
    raw: RawTls,
    dir: &Path,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Option<TlsSettings>, WebConfigError> {
    let key = |name: &str| format!("tls_server_config.{name}");
    let file = |value: Option<String>| set(value).map(|f| Pem::File(dir.join(f)));
    let inline = |value: Option<String>| set(value).map(Pem::Inline);
    let cert = file(raw.cert_file).or_else(|| inline(raw.cert));
    let private_key = file(raw.key_file).or_else(|| inline(raw.key));
    let client_ca = file(raw.client_ca_file).or_else(|| inline(raw.client_ca));
    let client_auth_type = set(raw.client_auth_type);
    let anything = raw.client_allowed_sans.is_some()
        || raw.cipher_suites.is_some()
        || raw.prefer_server_cipher_suites.is_some()
        || raw.curve_preferences.is_some()
        || raw.min_version.is_some()
        || raw.max_version.is_some();
    if cert.is_none() && private_key.is_none() && client_ca.is_none() && client_auth_type.is_none()
    {
        if anything {
            return Err(invalid(
                "tls_server_config",
                "sets TLS options but no certificate: add cert_file and key_file, or remove \
                 tls_server_config to serve plain HTTP"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let cert = cert.ok_or_else(|| {
        invalid(
            &key("cert_file"),
            "missing one of cert or cert_file: name the server's certificate (PEM)".into(),
        )
    })?;
    let private_key = private_key.ok_or_else(|| {
        invalid(
            &key("key_file"),
            "missing one of key or key_file: name the certificate's private key (PEM)".into(),
        )
    })?;
    let client_auth = match client_auth_type.as_deref() {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("RequestClientCert") => ClientAuth::RequestClientCert,
        Some("RequireAnyClientCert" | "RequireClientCert") => ClientAuth::RequireAnyClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other) => {
            return Err(invalid(
                &key("client_auth_type"),
                format!(
                    "invalid ClientAuth {other:?}; use one of NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ))
        }
    };
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(invalid(
            &key("client_ca_file"),
            "client CA's have been configured without a Client Auth Policy: set \
             client_auth_type (RequireAndVerifyClientCert to require certificates signed by it)"
                .into(),
        ));
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(invalid(
            &key("client_auth_type"),
            format!(
                "{client_auth:?} needs the CA that signs the client certificates: set \
                 client_ca_file (or client_ca)"
            ),
        ));
    }
    if raw.client_allowed_sans.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid(
            &key("client_allowed_sans"),
            "an empty list lets no client in: list the names the scrapers' certificates \
             carry, or remove it"
                .into(),
        ));
    }
    let client_allowed_sans = raw.client_allowed_sans.unwrap_or_default();
    if !client_allowed_sans.is_empty() && client_auth == ClientAuth::NoClientCert {
        return Err(invalid(
            &key("client_allowed_sans"),
            "client certificates are not asked for (client_auth_type NoClientCert), so no \
             client could connect: set client_auth_type to RequireAndVerifyClientCert"
                .into(),
        ));
    }
    let version = |name: &str, value: Option<String>, default: TlsVersion| match value.as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(old @ ("TLS10" | "TLS11")) => Err(invalid(
            &key(name),
            format!(
                "{old} is not supported: rustls implements TLS 1.2 and 1.3 only; use TLS12 or \
                 TLS13"
            ),
        )),
        Some(other) => Err(invalid(
            &key(name),
            format!("unknown TLS version {other:?}; use TLS12 or TLS13"),
        )),
    };
    let min_version = version("min_version", raw.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", raw.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(invalid(
            &key("min_version"),
            format!(
                "{min_version:?} is above max_version {max_version:?}: no version could be \
                 negotiated; lower min_version or raise max_version"
            ),
        ));
    }
    let mut cipher_suites = Vec::new();
    for name in raw.cipher_suites.unwrap_or_default() {
        if let Some((_, suite)) = TLS12_SUITES.iter().find(|(n, _)| *n == name) {
            cipher_suites.push(*suite);
        } else if TLS13_SUITES.contains(&name.as_str()) {
            // Not configurable in Go either: every TLS 1.3 suite stays enabled.
        } else {
            let supported: Vec<&str> = TLS12_SUITES.iter().map(|(n, _)| *n).collect();
            let why = if GO_ONLY_SUITES.contains(&name.as_str()) {
                "rustls does not implement CBC or RSA key exchange suites"
            } else {
                "unknown cipher"
            };
            return Err(invalid(
                &key("cipher_suites"),
                format!(
                    "{name}: {why}; use some of {} (TLS 1.3 suites are always enabled)",
                    supported.join(", ")
                ),
            ));
        }
    }
    let mut curves = Vec::new();
    for name in raw.curve_preferences.unwrap_or_default() {
        curves.push(match name.as_str() {
            "X25519" => Curve::X25519,
            "CurveP256" => Curve::P256,
            "CurveP384" => Curve::P384,
            "CurveP521" => {
                return Err(invalid(
                    &key("curve_preferences"),
                    "CurveP521: not implemented by rustls' ring provider; use X25519, \
                     CurveP256 or CurveP384"
                        .into(),
                ))
            }
            other => {
                return Err(invalid(
                    &key("curve_preferences"),
                    format!("unknown curve {other:?}; use X25519, CurveP256 or CurveP384"),
                ))
            }
        });
    }
    Ok(Some(TlsSettings {
        cert,
        key: private_key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        curves,
        client_allowed_sans,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    fn parsed(text: &str) -> Result<WebConfig, String> {
        parse(text, Path::new("/etc/listendrop/web-config.yml")).map_err(|e| e.to_string())
    }

    /// The error for `text`, which must name the file.
    fn error(text: &str) -> String {
        let err = parsed(text).expect_err(text);
        assert!(err.contains("/etc/listendrop/web-config.yml"), "{err}");
        err
    }

    #[test]
    fn empty_file_and_comments_mean_plain_http_without_auth() {
        for text in ["", "\n", "# nothing\n", "---\n"] {
            let config = parsed(text).unwrap();
            assert_eq!(config.tls, None, "{text:?}");
            assert!(config.users.is_empty() && config.headers.is_empty());
        }
    }

    #[test]
    fn every_documented_key() {
        let config = parsed(&format!(
            "tls_server_config:\n\
             \x20 cert_file: server.crt\n\
             \x20 key_file: /abs/server.key\n\
             \x20 client_auth_type: RequireAndVerifyClientCert\n\
             \x20 client_ca_file: ca.crt\n\
             \x20 min_version: TLS13\n\
             \x20 max_version: TLS13\n\
             \x20 cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n\
             \x20 prefer_server_cipher_suites: false\n\
             \x20 curve_preferences: [CurveP384, X25519, CurveP256]\n\
             \x20 client_allowed_sans: [prometheus.monitoring.svc, 10.0.0.1]\n\
             http_server_config:\n\
             \x20 http2: false\n\
             \x20 headers:\n\
             \x20   X-Frame-Options: deny\n\
             \x20   X-Content-Type-Options: nosniff\n\
             \x20   Strict-Transport-Security: max-age=31536000\n\
             \x20   Content-Security-Policy: \"\"\n\
             basic_auth_users:\n\
             \x20 prometheus: {HASH}\n\
             rate_limit:\n\
             \x20 interval: 1m30s\n\
             \x20 burst: 5\n"
        ))
        .unwrap();
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                interval: std::time::Duration::from_secs(90),
                burst: 5
            })
        );
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.client_allowed_sans,
            ["prometheus.monitoring.svc", "10.0.0.1"]
        );
        assert_eq!(
            tls.cert,
            Pem::File("/etc/listendrop/server.crt".into()),
            "relative to the file's directory"
        );
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(
            tls.client_ca,
            Some(Pem::File("/etc/listendrop/ca.crt".into()))
        );
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(
            tls.cipher_suites,
            [
                CipherSuite::EcdheRsaAes256Gcm,
                CipherSuite::EcdheEcdsaChacha20
            ]
        );
        assert!(!tls.prefer_server_cipher_suites);
        assert_eq!(tls.curves, [Curve::P384, Curve::X25519, Curve::P256]);
        assert_eq!(
            config.users.get("prometheus").map(String::as_str),
            Some(HASH)
        );
        // Sorted by name; the blank one is unset.
        assert_eq!(
            config.headers,
            [
                (
                    "Strict-Transport-Security".into(),
                    "max-age=31536000".into()
                ),
                ("X-Content-Type-Options".into(), "nosniff".into()),
                ("X-Frame-Options".into(), "deny".into()),
            ]
        );
    }

    #[test]
    fn rate_limit_durations_read_as_go_reads_them() {
        let ms = std::time::Duration::from_millis;
        for (text, want) in [
            ("1s", Some(ms(1000))),
            ("100ms", Some(ms(100))),
            ("1m30s", Some(ms(90_000))),
            ("1.5h", Some(ms(5_400_000))),
            ("2h45m", Some(ms(9_900_000))),
            ("300us", Some(std::time::Duration::from_micros(300))),
            ("5µs", Some(std::time::Duration::from_micros(5))),
            ("1000000000", Some(ms(1000))), // yaml.v2: an integer is nanoseconds
            ("0", Some(ms(0))),
            ("-1s", Some(ms(0))),
            ("", None),
            ("s", None),
            ("1", Some(std::time::Duration::from_nanos(1))),
            ("1d", None),
            ("1 s", None),
            (".s", None),
        ] {
            assert_eq!(go_duration(text), want, "{text:?}");
        }
        // exporter-toolkit's own test files: interval 0 is no limiter; 1s with burst 0
        // refuses everything (the limiter then allows nothing).
        let off = parsed("rate_limit:\n  interval: 0\n  burst: 0\n").unwrap();
        assert_eq!(off.rate_limit, None);
        let none = parsed("rate_limit:\n  interval: \"1s\"\n  burst: 0\n").unwrap();
        assert_eq!(
            none.rate_limit,
            Some(RateLimit {
                interval: ms(1000),
                burst: 0
            })
        );
    }

    #[test]
    fn defaults_and_inline_pem() {
        let config =
            parsed("tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key: k\n")
                .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.cert,
            Pem::Inline("-----BEGIN CERTIFICATE-----\n".into())
        );
        assert_eq!(
            format!("{:?}", tls.key),
            "Inline(..)",
            "a key is never printed"
        );
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert!(tls.prefer_server_cipher_suites && tls.cipher_suites.is_empty());
        assert!(tls.curves.is_empty());
        // A file wins over inline text, as in Go; an empty string is unset.
        let tls = parsed("tls_server_config:\n  cert: x\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: \"\"\n")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/listendrop/c.pem".into()));
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        // Basic auth without TLS is allowed (exporter-toolkit's web_config_users_noTLS).
        let config = parsed(&format!("basic_auth_users:\n  alice: {HASH}\n")).unwrap();
        assert!(config.tls.is_none() && config.users.len() == 1);
    }

    #[test]
    fn every_client_auth_type() {
        for (name, want) in [
            ("NoClientCert", ClientAuth::NoClientCert),
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            ("RequireClientCert", ClientAuth::RequireAnyClientCert),
            (
                "VerifyClientCertIfGiven",
                ClientAuth::VerifyClientCertIfGiven,
            ),
            (
                "RequireAndVerifyClientCert",
                ClientAuth::RequireAndVerifyClientCert,
            ),
        ] {
            let ca = if want == ClientAuth::NoClientCert {
                ""
            } else {
                "  client_ca_file: ca.pem\n"
            };
            let tls = parsed(&format!(
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {name}\n{ca}"
            ))
            .unwrap()
            .tls
            .unwrap();
            assert_eq!(tls.client_auth, want, "{name}");
        }
        let err = error(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Always\n",
        );
        assert!(err.contains("invalid ClientAuth \"Always\""), "{err}");
        assert!(err.contains("RequireAndVerifyClientCert"), "{err}");
    }

    #[test]
    fn inconsistent_tls_settings_are_refused_with_the_fix() {
        let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
        for (extra, needles) in [
            (
                "  client_ca_file: ca\n",
                &[
                    "client_ca_file",
                    "without a Client Auth Policy",
                    "set client_auth_type",
                ][..],
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                &["client_auth_type", "set client_ca_file"],
            ),
            (
                "  client_auth_type: VerifyClientCertIfGiven\n",
                &["needs the CA"],
            ),
            (
                "  min_version: TLS11\n",
                &[
                    "min_version",
                    "TLS11 is not supported",
                    "use TLS12 or TLS13",
                ],
            ),
            ("  max_version: TLS10\n", &["max_version", "TLS10"]),
            ("  min_version: SSL3\n", &["unknown TLS version \"SSL3\""]),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                &["above max_version"],
            ),
            (
                "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
                &[
                    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                    "CBC",
                    "use some of TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                ],
            ),
            (
                "  cipher_suites: [TLS_INVENTED]\n",
                &["TLS_INVENTED: unknown cipher"],
            ),
            (
                "  curve_preferences: [CurveP521]\n",
                &["CurveP521", "X25519, CurveP256 or CurveP384"],
            ),
            (
                "  curve_preferences: [Curve9]\n",
                &["unknown curve \"Curve9\""],
            ),
            (
                "  client_allowed_sans: [one]\n",
                &[
                    "client_allowed_sans",
                    "NoClientCert",
                    "no client could connect",
                ],
            ),
            (
                "  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: []\n",
                &["client_allowed_sans", "an empty list lets no client in"],
            ),
        ] {
            let err = error(&format!("{base}{extra}"));
            for needle in needles {
                assert!(err.contains(needle), "{extra}: {needle:?} not in {err}");
            }
        }
        let err = error("tls_server_config:\n  key_file: k\n");
        assert!(err.contains("missing one of cert or cert_file"), "{err}");
        let err = error("tls_server_config:\n  cert_file: \"\"\n  key_file: k\n");
        assert!(err.contains("missing one of cert or cert_file"), "{err}");
        let err = error("tls_server_config:\n  cert_file: c\n");
        assert!(err.contains("missing one of key or key_file"), "{err}");
        let err = error("tls_server_config:\n  min_version: TLS13\n");
        assert!(
            err.contains("no certificate: add cert_file and key_file"),
            "{err}"
        );
    }

    #[test]
    fn unknown_duplicate_and_mistyped_keys_are_refused() {
        for (text, needle) in [
            (
                "tls_server_config:\n  cert_filse: server.crt\n",
                "cert_filse",
            ),
            ("tls_config:\n  cert_file: c\n", "tls_config"),
            ("http_server_config:\n  compression: true\n", "compression"),
            (
                "basic_auth_users:\n  a: x\nbasic_auth_users:\n  b: y\n",
                "duplicate",
            ),
            (
                "tls_server_config:\n  prefer_server_cipher_suites: sometimes\n",
                "line 2",
            ),
            ("tls_server_config: [1, 2]\n", "line 1"),
            ("tls_server_config:\n  cert_file: [\n", "line"),
            (
                "rate_limit:\n  interval: soon\n  burst: 1\n",
                "rate_limit.interval: \"soon\" is not a duration",
            ),
            ("rate_limit:\n  burst: -1\n", "line 2"),
            ("rate_limit:\n  every: 1s\n", "every"),
        ] {
            let err = error(text);
            assert!(err.contains(needle), "{text:?}: {needle:?} not in {err}");
        }
        assert!(error("tls_config: {}\n").contains("exporter-toolkit format"));
    }

    #[test]
    fn users_need_bcrypt_hashes_and_headers_the_allowed_values() {
        let err = error("basic_auth_users:\n  alice: secret\n");
        assert!(
            err.contains("basic_auth_users.alice") && err.contains("not a bcrypt hash"),
            "{err}"
        );
        assert!(err.contains("htpasswd -nBC"), "{err}");
        assert!(
            !err.contains("secret\""),
            "the value is not repeated: {err}"
        );
        let err = error("http_server_config:\n  headers:\n    X-Powered-By: listendrop\n");
        assert!(
            err.contains("X-Powered-By") && err.contains("can not be configured"),
            "{err}"
        );
        let err = error("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(err.contains("invalid value \"allow\""), "{err}");
        let err = error("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n");
        assert!(err.contains("[\"nosniff\"]"), "{err}");
        let err = error("http_server_config:\n  headers:\n    X-XSS-Protection: \"a\\nb\"\n");
        assert!(err.contains("not a valid header value"), "{err}");
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/web-config.example.yml");
        let config = read(&path).unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.cert,
            Pem::File(path.parent().unwrap().join("server.crt"))
        );
        assert!(config.users.contains_key("prometheus"));
        assert_eq!(
            config.headers,
            [("X-Content-Type-Options".into(), "nosniff".into())]
        );
    }

    #[test]
    fn a_missing_file_names_itself() {
        let err = read(Path::new("/nonexistent/web-config.yml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/web-config.yml"), "{err}");
        assert!(err.contains("No such file"), "{err}");
        assert!(err.contains("--web.config.file"), "{err}");
    }
}
