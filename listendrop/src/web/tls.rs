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
        .map_err(|e| material(cert_key, &tls.cert, pem_problem(&e)))?;
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
            format!(
                "{}: give the certificate's private key in PEM (PKCS#8, PKCS#1 or SEC1)",
                match e {
                    rustls::pki_types::pem::Error::NoItemsFound => "no private key in it".into(),
                    e => pem_problem(&e),
                }
            ),
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

    let verifier: Option<Arc<dyn ClientCertVerifier>> = match tls.client_auth {
        ClientAuth::NoClientCert => None,
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Some(Arc::new(AnyClientCert {
                mandatory: tls.client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            }))
        }
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
                let cert = cert.map_err(|e| material(ca_key, ca, pem_problem(&e)))?;
                roots.add(cert).map_err(|e| {
                    material(
                        ca_key,
                        ca,
                        format!(
                            "not a usable CA certificate ({e}): give the certificate of the CA \
                             that signs the client certificates"
                        ),
                    )
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
            Some(verifier.build().map_err(|e| {
                material(
                    ca_key,
                    ca,
                    format!("{e}: give the CA that signs the client certificates"),
                )
            })?)
        }
    };
    let builder = match verifier {
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
mod tests {
    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    use rustls::{ClientConfig, ClientConnection, ServerConnection};

    use super::*;
    use crate::web::config;

    /// A CA, a server certificate for 127.0.0.1, a client certificate of the CA and one
    /// of another CA, as PEM files in a directory removed on drop.
    struct Fixture {
        dir: PathBuf,
        ca: CertificateDer<'static>,
        client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        stranger: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        /// A client certificate of the CA naming an IP address and a URI.
        ip_uri: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    }

    fn issuer() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    }

    fn der_pair(
        (cert, key): (rcgen::Certificate, KeyPair),
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        (vec![cert.der().clone()], key)
    }

    impl Fixture {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("listendrop-web-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = issuer();
            let (server, server_key) = leaf(&ca, "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
            std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
            std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
            std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
            let client = der_pair(leaf(&ca, "client", ExtendedKeyUsagePurpose::ClientAuth));
            let stranger = der_pair(leaf(
                &issuer(),
                "stranger",
                ExtendedKeyUsagePurpose::ClientAuth,
            ));
            let mut params = CertificateParams::new(vec!["10.1.2.3".to_owned()]).unwrap();
            params.subject_alt_names.push(rcgen::SanType::URI(
                "spiffe://cluster/prometheus".try_into().unwrap(),
            ));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            let ip_uri = der_pair((params.signed_by(&key, &ca).unwrap(), key));
            Self {
                dir,
                ca: ca.der().clone(),
                client,
                stranger,
                ip_uri,
            }
        }

        /// The server configuration of `yaml` (with paths relative to the fixture).
        fn server(&self, yaml: &str) -> Result<Arc<ServerConfig>, String> {
            let path = self.dir.join("web-config.yml");
            let parsed = config::parse(yaml, &path).map_err(|e| e.to_string())?;
            server_config(&path, parsed.tls.as_ref().unwrap()).map_err(|e| e.to_string())
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A handshake in memory and one byte of data each way: the server's error, if any.
    fn handshake(
        server: Arc<ServerConfig>,
        ca: &CertificateDer<'static>,
        client_cert: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client_config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .unwrap(),
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        std::io::Write::write_all(&mut client.writer(), b"x").unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            if !server.is_handshaking() {
                let mut byte = [0; 1];
                if std::io::Read::read(&mut server.reader(), &mut byte).is_ok() {
                    return Ok(());
                }
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            // The client's own complaints are not the server's policy.
            let _ = client.process_new_packets();
        }
        panic!("no data after 10 rounds");
    }

    #[test]
    fn every_client_auth_type_accepts_and_refuses_as_in_go() {
        let f = Fixture::new("auth");
        // (type, no certificate, another CA's, the CA's)
        for (auth, none, stranger, good) in [
            ("NoClientCert", true, true, true),
            ("RequestClientCert", true, true, true),
            ("RequireAnyClientCert", false, true, true),
            ("VerifyClientCertIfGiven", true, false, true),
            ("RequireAndVerifyClientCert", false, false, true),
        ] {
            let ca = if auth == "NoClientCert" {
                ""
            } else {
                "  client_ca_file: ca.crt\n"
            };
            let server = f
                .server(&format!(
                    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                     client_auth_type: {auth}\n{ca}"
                ))
                .unwrap();
            for (who, cert, want) in [
                ("no certificate", None, none),
                ("another CA's", Some(&f.stranger), stranger),
                ("the CA's", Some(&f.client), good),
            ] {
                let got = handshake(Arc::clone(&server), &f.ca, cert);
                assert_eq!(got.is_ok(), want, "{auth}, {who}: {got:?}");
            }
        }
    }

    #[test]
    fn client_allowed_sans_admit_only_those_names() {
        let f = Fixture::new("sans");
        let server = |auth: &str, sans: &str| {
            f.server(&format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: {auth}\n  client_ca_file: ca.crt\n  \
                 client_allowed_sans: [{sans}]\n"
            ))
            .unwrap()
        };
        // (policy, allowed, no certificate, another CA's "stranger", the CA's "client",
        // the CA's 10.1.2.3 + spiffe://cluster/prometheus)
        for (auth, sans, none, stranger, client, ip_uri) in [
            (
                "RequireAndVerifyClientCert",
                "client",
                false,
                false,
                true,
                false,
            ),
            (
                "RequireAndVerifyClientCert",
                "other, 10.1.2.3",
                false,
                false,
                false,
                true,
            ),
            (
                "RequireAndVerifyClientCert",
                "\"spiffe://cluster/prometheus\"",
                false,
                false,
                false,
                true,
            ),
            (
                "VerifyClientCertIfGiven",
                "client",
                false,
                false,
                true,
                false,
            ),
            // Not chained to a CA, but the name is checked all the same.
            (
                "RequireAnyClientCert",
                "stranger",
                false,
                true,
                false,
                false,
            ),
            ("RequestClientCert", "10.1.2.3", false, false, false, true),
        ] {
            let server = server(auth, sans);
            for (who, cert, want) in [
                ("no certificate", None, none),
                ("stranger", Some(&f.stranger), stranger),
                ("client", Some(&f.client), client),
                ("10.1.2.3", Some(&f.ip_uri), ip_uri),
            ] {
                let got = handshake(Arc::clone(&server), &f.ca, cert);
                assert_eq!(got.is_ok(), want, "{auth} [{sans}], {who}: {got:?}");
            }
        }
    }

    #[test]
    fn versions_suites_and_curves_are_applied() {
        let f = Fixture::new("params");
        let server = f
            .server(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, \
                 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  \
                 curve_preferences: [CurveP384]\n  prefer_server_cipher_suites: false\n",
            )
            .unwrap();
        let provider = server.crypto_provider();
        let suites: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            suites[..2],
            [
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ],
            "{suites:?}"
        );
        assert_eq!(suites.len(), 5, "and the three TLS 1.3 suites: {suites:?}");
        let groups: Vec<String> = provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["secp384r1"]);
        assert!(!server.ignore_client_order);
        assert_eq!(server.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(handshake(server, &f.ca, None).is_ok());
        // TLS 1.3 only: a TLS 1.2-only client is refused.
        let tls13 = f
            .server(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 min_version: TLS13\n",
            )
            .unwrap();
        assert!(handshake(Arc::clone(&tls13), &f.ca, None).is_ok());
        let mut roots = RootCertStore::empty();
        roots.add(f.ca.clone()).unwrap();
        let tls12_client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut client = ClientConnection::new(Arc::new(tls12_client), name).unwrap();
        let mut server = ServerConnection::new(tls13).unwrap();
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        assert!(server.process_new_packets().is_err(), "TLS 1.2 refused");
    }

    #[test]
    fn bad_certificates_keys_and_cas_name_the_file_and_the_fix() {
        let f = Fixture::new("bad");
        let dir = f.dir.display().to_string();
        std::fs::write(f.dir.join("empty.pem"), "").unwrap();
        std::fs::write(f.dir.join("cut.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        // A key of another certificate.
        std::fs::write(
            f.dir.join("other.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        for (tls, needles) in [
            ("cert_file: nowhere.crt\n  key_file: server.key", &["tls_server_config.cert_file", "nowhere.crt", "No such file"][..]),
            ("cert_file: server.crt\n  key_file: nowhere.key", &["tls_server_config.key_file", "nowhere.key"]),
            ("cert_file: empty.pem\n  key_file: server.key", &["empty.pem", "no certificate in it"]),
            ("cert_file: cut.pem\n  key_file: server.key", &["cut.pem", "no END line", "is the file complete"]),
            ("cert_file: server.crt\n  key_file: empty.pem", &["tls_server_config.key_file", "no private key in it"]),
            ("cert_file: server.crt\n  key_file: other.key", &["other.key", "the key must be the one of the certificate"]),
            ("cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.pem", &["tls_server_config.client_ca_file", "no certificate in it"]),
            ("cert: \"-----BEGIN CERTIFICATE-----\"\n  key_file: server.key", &["tls_server_config.cert (inline)", "no END line"]),
        ] {
            let err = f
                .server(&format!("tls_server_config:\n  {tls}\n"))
                .expect_err(tls);
            assert!(err.contains(&format!("{dir}/web-config.yml")), "{err}");
            for needle in needles {
                assert!(err.contains(needle), "{tls}: {needle:?} not in {err}");
            }
        }
        // Inline PEM works as files do.
        let cert = std::fs::read_to_string(f.dir.join("server.crt")).unwrap();
        let key = std::fs::read_to_string(f.dir.join("server.key")).unwrap();
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let server = f
            .server(&format!(
                "tls_server_config:\n  cert: |\n{}  key: |\n{}",
                indent(&cert),
                indent(&key)
            ))
            .unwrap();
        assert!(handshake(server, &f.ca, None).is_ok());
    }
}
