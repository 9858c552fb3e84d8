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
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};

use super::config::{CipherSuite, ClientAuth, Curve, Pem, TlsSettings, TlsVersion, WebConfigError};

/// Builds the server configuration, reading the certificate, key and client CA it names.
/// `path` is the web configuration file, for messages.
pub fn server_config(path: &Path, tls: &TlsSettings) -> Result<Arc<ServerConfig>, WebConfigError> {
    let material = |key: &'static str, pem: &Pem, problem: String| WebConfigError::Material {
        path: path.to_owned(),
        key,
        origin: pem.origin(),
        problem,
    };
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
    let cert_pem = read(path, cert_key, &tls.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material(cert_key, &tls.cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(material(
            cert_key,
            &tls.cert,
            "no certificate in it (a PEM block \"BEGIN CERTIFICATE\"): give the server's \
             certificate, then its intermediates"
                .into(),
        ));
    }
    let key_pem = read(path, key_key, &tls.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        material(
            key_key,
            &tls.key,
            format!("no usable private key ({e}): give the certificate's key in PEM (PKCS#8, PKCS#1 or SEC1)"),
        )
    })?;

    let provider = Arc::new(provider(tls));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| WebConfigError::Invalid {
            path: path.to_owned(),
            key: "tls_server_config.cipher_suites".into(),
            problem: format!("{e}; list suites of the versions min_version..max_version allow"),
        })?;

    let builder = match tls.client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: tls.client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = tls
                .client_ca
                .as_ref()
                .ok_or_else(|| WebConfigError::Invalid {
                    path: path.to_owned(),
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
            let ca_pem = read(path, ca_key, ca)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                let cert =
                    cert.map_err(|e| material(ca_key, ca, format!("not PEM certificates: {e}")))?;
                roots.add(cert).map_err(|e| {
                    material(ca_key, ca, format!("not a usable CA certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(material(
                    ca_key,
                    ca,
                    "no certificate in it: give the CA that signs the client certificates (PEM)"
                        .into(),
                ));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if tls.client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| material(ca_key, ca, format!("{e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        material(
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
