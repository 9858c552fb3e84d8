//! `tls_server_config` made into a rustls `ServerConfig` (ring provider): the
//! certificate chain and key, the protocol versions, cipher suites and curves, and the
//! client certificate policy of Go's `tls.ClientAuthType`.

use std::{path::Path, sync::Arc};

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ParsedCertificate, WebPkiClientVerifier,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite,
};

use super::config::{CipherSuite, ClientAuth, Curve, Pem, TlsSettings, TlsVersion, WebConfigError};

/// Builds the server configuration, reading the certificate, key and client CA it names.
/// `path` is the web configuration file, for messages.
pub fn server_config(path: &Path, tls: &TlsSettings) -> Result<Arc<ServerConfig>, WebConfigError> {
    let files = Files { path };
    let cert_key = key_of(
        &tls.cert,
        "tls_server_config.cert_file",
        "tls_server_config.cert",
    );
    let key_key = key_of(
        &tls.key,
        "tls_server_config.key_file",
        "tls_server_config.key",
    );
    let chain = files.chain(cert_key, &tls.cert)?;
    let key = files.private_key(key_key, &tls.key)?;

    let provider = Arc::new(provider(tls));
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(tls))
        .map_err(|e| WebConfigError::Invalid {
            path: path.to_owned(),
            key: "tls_server_config.cipher_suites".into(),
            problem: format!("{e}; list suites of the versions min_version..max_version allow"),
        })?;
    let builder = match files.client_verifier(tls, &provider)? {
        None => builder.with_no_client_auth(),
        Some(verifier) if tls.client_allowed_sans.is_empty() => {
            builder.with_client_cert_verifier(verifier)
        }
        Some(inner) => builder.with_client_cert_verifier(Arc::new(AllowedSans {
            inner,
            allowed: tls.client_allowed_sans.clone(),
        })),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        files.material(
            key_key,
            &tls.key,
            format!(
                "{e}: the key must be the one of the certificate ({})",
                tls.cert.origin()
            ),
        )
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    // HTTP/1.1 only (hyper's http1 server); `http_server_config.http2` changes nothing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The protocol versions between `min_version` and `max_version`.
fn versions(tls: &TlsSettings) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, v)| v)
    .collect()
}

/// Reads the PEM material the web configuration file at `path` names, with errors that
/// name the key and where the PEM came from.
struct Files<'a> {
    path: &'a Path,
}

impl Files<'_> {
    fn material(&self, key: &'static str, pem: &Pem, problem: String) -> WebConfigError {
        WebConfigError::Material {
            path: self.path.to_owned(),
            key,
            origin: pem.origin(),
            problem,
        }
    }

    /// The server's certificate chain: its certificate, then the intermediates.
    fn chain(
        &self,
        key: &'static str,
        pem: &Pem,
    ) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
        let text = read(self.path, key, pem)?;
        let chain = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.material(key, pem, pem_problem(&e)))?;
        if chain.is_empty() {
            return Err(self.material(
                key,
                pem,
                "no certificate in it (a PEM block \"BEGIN CERTIFICATE\"): give the server's \
                 certificate, then its intermediates"
                    .into(),
            ));
        }
        Ok(chain)
    }

    fn private_key(
        &self,
        key: &'static str,
        pem: &Pem,
    ) -> Result<PrivateKeyDer<'static>, WebConfigError> {
        let text = read(self.path, key, pem)?;
        PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
            self.material(
                key,
                pem,
                format!(
                    "{}: give the certificate's private key in PEM (PKCS#8, PKCS#1 or SEC1)",
                    match e {
                        rustls::pki_types::pem::Error::NoItemsFound =>
                            "no private key in it".into(),
                        e => pem_problem(&e),
                    }
                ),
            )
        })
    }

    /// The client certificate policy of Go's `tls.ClientAuthType`; `None` asks for none.
    fn client_verifier(
        &self,
        tls: &TlsSettings,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, WebConfigError> {
        let mandatory = match tls.client_auth {
            ClientAuth::NoClientCert => return Ok(None),
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
                return Ok(Some(Arc::new(AnyClientCert {
                    mandatory: tls.client_auth == ClientAuth::RequireAnyClientCert,
                    algorithms: provider.signature_verification_algorithms,
                })));
            }
            ClientAuth::VerifyClientCertIfGiven => false,
            ClientAuth::RequireAndVerifyClientCert => true,
        };
        let ca = tls
            .client_ca
            .as_ref()
            .ok_or_else(|| WebConfigError::Invalid {
                path: self.path.to_owned(),
                key: "tls_server_config.client_ca_file".into(),
                problem: format!(
                    "{:?} needs a client CA: set client_ca_file",
                    tls.client_auth
                ),
            })?;
        let ca_key = key_of(
            ca,
            "tls_server_config.client_ca_file",
            "tls_server_config.client_ca",
        );
        let roots = self.client_roots(ca_key, ca)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
        let verifier = if mandatory {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier.build().map_err(|e| {
            self.material(
                ca_key,
                ca,
                format!("{e}: give the CA that signs the client certificates"),
            )
        })?;
        Ok(Some(verifier))
    }

    /// The CAs that sign client certificates.
    fn client_roots(&self, key: &'static str, pem: &Pem) -> Result<RootCertStore, WebConfigError> {
        let text = read(self.path, key, pem)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&text) {
            let cert = cert.map_err(|e| self.material(key, pem, pem_problem(&e)))?;
            roots.add(cert).map_err(|e| {
                self.material(
                    key,
                    pem,
                    format!(
                        "not a usable CA certificate ({e}): give the certificate of the CA \
                         that signs the client certificates"
                    ),
                )
            })?;
        }
        if roots.is_empty() {
            return Err(self.material(
                key,
                pem,
                "no certificate in it: give the CA that signs the client certificates (PEM)".into(),
            ));
        }
        Ok(roots)
    }
}

/// What is wrong with broken PEM text, in words (the parser's own messages print bytes).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let what = match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no END line (-----END {}-----)",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { .. } => "a malformed -----BEGIN line".to_owned(),
        Error::Base64Decode(e) => format!("bad base64 in a PEM block ({e})"),
        e => e.to_string(),
    };
    format!("broken PEM: {what}; is the file complete?")
}

/// The key that gives `pem` in the file: `file_key` or `inline_key`.
fn key_of(pem: &Pem, file_key: &'static str, inline_key: &'static str) -> &'static str {
    match pem {
        Pem::File(_) => file_key,
        Pem::Inline(_) => inline_key,
    }
}

/// The bytes of `pem`.
fn read(path: &Path, key: &'static str, pem: &Pem) -> Result<Vec<u8>, WebConfigError> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(file) => std::fs::read(file).map_err(|error| WebConfigError::ReadNamed {
            path: path.to_owned(),
            key,
            file: file.clone(),
            error,
        }),
    }
}

/// ring's provider with the configured TLS 1.2 suites (in order, before every TLS 1.3
/// suite) and curves.
fn provider(tls: &TlsSettings) -> CryptoProvider {
    use ring::{cipher_suite as cs, kx_group};
    let mut provider = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let tls13: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        provider.cipher_suites = tls
            .cipher_suites
            .iter()
            .map(|suite| match suite {
                CipherSuite::EcdheEcdsaAes128Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::EcdheEcdsaAes256Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::EcdheEcdsaChacha20 => {
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                CipherSuite::EcdheRsaAes128Gcm => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::EcdheRsaAes256Gcm => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::EcdheRsaChacha20 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            })
            .chain(tls13)
            .collect();
    }
    if !tls.curves.is_empty() {
        provider.kx_groups = tls
            .curves
            .iter()
            .map(|curve| match curve {
                Curve::X25519 => kx_group::X25519,
                Curve::P256 => kx_group::SECP256R1,
                Curve::P384 => kx_group::SECP384R1,
            })
            .collect();
    }
    provider
}

/// `client_allowed_sans`: after the policy's own checks, the client certificate must
/// carry one of the allowed names as a SAN, compared as exporter-toolkit does (exact
/// string equality): DNS names and URIs as written, IP addresses as addresses. (E-mail
/// SANs are not compared: rustls' X.509 parser does not expose them.) As in Go, where the
/// check runs on every handshake, a client without a certificate is refused.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowedSans {
    fn allows(&self, end_entity: &CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
            return false;
        };
        let names: Vec<&str> = cert
            .valid_dns_names()
            .chain(cert.valid_uri_names())
            .collect();
        self.allowed.iter().any(|allowed| {
            names.contains(&allowed.as_str())
                || allowed.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                    cert.verify_is_valid_for_subject_name(&rustls::pki_types::ServerName::from(ip))
                        .is_ok()
                })
        })
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allows(end_entity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for
/// (and with the latter required) but not checked against any CA, as in Go. The client
/// still proves it holds the certificate's key (the handshake signature is verified).
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // A certificate, even if no CA vouches for it.
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
