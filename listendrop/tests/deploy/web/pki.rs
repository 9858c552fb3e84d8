//! Certificates made at test time (rcgen): a CA, the server's, clients', and a stranger CA
//! whose clients the daemon must refuse.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::tools::TempDir;

/// What a test needs: certificates in a directory of its own.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Another CA, whose client certificates the daemon must refuse.
    stranger: CertifiedIssuer<'static, KeyPair>,
}

pub(super) fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes `text` to `path` as a rotation does: a new file renamed over the old one.
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Pki {
    /// A CA (`ca.crt`) and a stranger CA, in a fresh directory.
    pub fn new() -> Self {
        let pki = Self {
            dir: TempDir::new("web"),
            ca: ca("listendrop test CA"),
            stranger: ca("stranger CA"),
        };
        std::fs::write(pki.path("ca.crt"), pki.ca.pem()).unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new key and a certificate for 127.0.0.1 with this serial, written to
    /// `server.key` then `server.crt`. Returns the certificate.
    pub(super) fn issue_server(&self, serial: u64) -> CertificateDer<'static> {
        self.issue_server_for(serial, &["127.0.0.1", "localhost"], "server")
    }

    /// The same for `names`, written to `<file>.key` then `<file>.crt`.
    pub fn issue_server_for(
        &self,
        serial: u64,
        names: &[&str],
        file: &str,
    ) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("listendrop {serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        replace(&self.path(&format!("{file}.key")), &key.serialize_pem());
        replace(&self.path(&format!("{file}.crt")), &cert.pem());
        cert.der().clone()
    }

    /// A client certificate signed by the CA (or the stranger): (certificate, key) files.
    pub(super) fn issue_client(&self, name: &str, by_stranger: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let issuer = if by_stranger {
            &self.stranger
        } else {
            &self.ca
        };
        let cert = params.signed_by(&key, issuer).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// Writes the web configuration and returns its path.
    pub(super) fn web_config(&self, yaml: &str) -> PathBuf {
        let path = self.path("web-config.yml");
        replace(&path, yaml);
        path
    }
}
