//! `tls_server_config`: the file's TLS section, validated into [`TlsSettings`] with
//! exporter-toolkit's semantics (see the parent module for where listendrop refuses what
//! Go would serve differently).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{set, WebConfigError};

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

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
}

/// Validates `tls_server_config` (`None`: plain HTTP); `dir` resolves relative file names,
/// `invalid` makes an error for a key.
pub(super) fn tls_settings(
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
    let client_auth = client_auth(client_auth_type.as_deref(), client_ca.is_some(), invalid)?;
    let client_allowed_sans = allowed_sans(raw.client_allowed_sans, client_auth, invalid)?;
    let min_version = version("min_version", raw.min_version, TlsVersion::Tls12, invalid)?;
    let max_version = version("max_version", raw.max_version, TlsVersion::Tls13, invalid)?;
    if min_version > max_version {
        return Err(invalid(
            &key("min_version"),
            format!(
                "{min_version:?} is above max_version {max_version:?}: no version could be \
                 negotiated; lower min_version or raise max_version"
            ),
        ));
    }
    Ok(Some(TlsSettings {
        cert,
        key: private_key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites: cipher_suites(raw.cipher_suites.unwrap_or_default(), invalid)?,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        curves: curves(raw.curve_preferences.unwrap_or_default(), invalid)?,
        client_allowed_sans,
    }))
}

/// `client_auth_type`, checked against whether a client CA is given.
fn client_auth(
    name: Option<&str>,
    has_ca: bool,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<ClientAuth, WebConfigError> {
    let client_auth = match name {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("RequestClientCert") => ClientAuth::RequestClientCert,
        Some("RequireAnyClientCert" | "RequireClientCert") => ClientAuth::RequireAnyClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other) => {
            return Err(invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "invalid ClientAuth {other:?}; use one of NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ))
        }
    };
    if has_ca && client_auth == ClientAuth::NoClientCert {
        return Err(invalid(
            "tls_server_config.client_ca_file",
            "client CA's have been configured without a Client Auth Policy: set \
             client_auth_type (RequireAndVerifyClientCert to require certificates signed by it)"
                .into(),
        ));
    }
    if client_auth.verifies() && !has_ca {
        return Err(invalid(
            "tls_server_config.client_auth_type",
            format!(
                "{client_auth:?} needs the CA that signs the client certificates: set \
                 client_ca_file (or client_ca)"
            ),
        ));
    }
    Ok(client_auth)
}

/// `client_allowed_sans`: a non-empty list, and only where client certificates are asked.
fn allowed_sans(
    sans: Option<Vec<String>>,
    client_auth: ClientAuth,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Vec<String>, WebConfigError> {
    let key = "tls_server_config.client_allowed_sans";
    if sans.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid(
            key,
            "an empty list lets no client in: list the names the scrapers' certificates \
             carry, or remove it"
                .into(),
        ));
    }
    let sans = sans.unwrap_or_default();
    if !sans.is_empty() && client_auth == ClientAuth::NoClientCert {
        return Err(invalid(
            key,
            "client certificates are not asked for (client_auth_type NoClientCert), so no \
             client could connect: set client_auth_type to RequireAndVerifyClientCert"
                .into(),
        ));
    }
    Ok(sans)
}

/// `min_version` or `max_version` (`default` when unset).
fn version(
    name: &str,
    value: Option<String>,
    default: TlsVersion,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<TlsVersion, WebConfigError> {
    let key = format!("tls_server_config.{name}");
    match value.as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(old @ ("TLS10" | "TLS11")) => Err(invalid(
            &key,
            format!(
                "{old} is not supported: rustls implements TLS 1.2 and 1.3 only; use TLS12 or \
                 TLS13"
            ),
        )),
        Some(other) => Err(invalid(
            &key,
            format!("unknown TLS version {other:?}; use TLS12 or TLS13"),
        )),
    }
}

/// `cipher_suites`: TLS 1.2 suites rustls implements, in order (TLS 1.3 names accepted).
fn cipher_suites(
    names: Vec<String>,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Vec<CipherSuite>, WebConfigError> {
    let mut suites = Vec::new();
    for name in names {
        if let Some((_, suite)) = TLS12_SUITES.iter().find(|(n, _)| *n == name) {
            suites.push(*suite);
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
                "tls_server_config.cipher_suites",
                format!(
                    "{name}: {why}; use some of {} (TLS 1.3 suites are always enabled)",
                    supported.join(", ")
                ),
            ));
        }
    }
    Ok(suites)
}

/// `curve_preferences`: the curves rustls' ring provider implements, in order.
fn curves(
    names: Vec<String>,
    invalid: &impl Fn(&str, String) -> WebConfigError,
) -> Result<Vec<Curve>, WebConfigError> {
    names
        .iter()
        .map(|name| match name.as_str() {
            "X25519" => Ok(Curve::X25519),
            "CurveP256" => Ok(Curve::P256),
            "CurveP384" => Ok(Curve::P384),
            "CurveP521" => Err(invalid(
                "tls_server_config.curve_preferences",
                "CurveP521: not implemented by rustls' ring provider; use X25519, CurveP256 \
                 or CurveP384"
                    .into(),
            )),
            other => Err(invalid(
                "tls_server_config.curve_preferences",
                format!("unknown curve {other:?}; use X25519, CurveP256 or CurveP384"),
            )),
        })
        .collect()
}
