//! Tests of `tls`.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
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
        let dir =
            std::env::temp_dir().join(format!("listendrop-web-tls-{tag}-{}", std::process::id()));
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
