//! The test's HTTPS client (rustls) and the misbehaving clients the daemon must refuse.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};

/// An answer to an HTTPS request.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers), lowercase.
    pub head: String,
    /// The body.
    pub body: String,
    /// The certificate the server presented.
    pub server_cert: CertificateDer<'static>,
}

/// GET `path` over a fresh TLS connection trusting `ca`, with a client certificate and
/// an `Authorization` header if given. `Err`: the handshake or the exchange failed.
pub(super) fn https_get(
    addr: SocketAddr,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    path: &str,
    authorization: Option<&str>,
) -> Result<Answer, String> {
    let name = ServerName::from(addr.ip());
    https_get_as(addr, name, ca, client, path, authorization)
}

/// The same, checking the server's certificate against `name` instead of the address.
pub fn https_get_as(
    addr: SocketAddr,
    name: ServerName<'static>,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    path: &str,
    authorization: Option<&str>,
) -> Result<Answer, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    };
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let auth = authorization.map_or_else(String::new, |a| format!("authorization: {a}\r\n"));
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{auth}\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify, after the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head}"))?;
    let server_cert = conn.peer_certificates().unwrap()[0].clone().into_owned();
    Ok(Answer {
        status,
        head: head.to_lowercase(),
        body: body.to_owned(),
        server_cert,
    })
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What the server sends back to a plain HTTP request on its TLS port (until it closes).
pub(super) fn plain_http_answer(addr: SocketAddr) -> Vec<u8> {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // A reset after the alert is as good as a close.
    let _ = sock.read_to_end(&mut answer);
    answer
}

/// Asserts that a plain HTTP client gets no HTTP answer from the TLS port.
pub(super) fn assert_plain_http_refused(addr: SocketAddr) {
    let answer = plain_http_answer(addr);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // A TLS alert record (content type 21), or nothing.
    assert!(
        answer.is_empty() || answer[0] == 21,
        "not a TLS alert: {answer:?}"
    );
}

/// A client that connects and never starts the handshake is cut off after the header
/// timeout (5 s), so it cannot hold a connection slot.
pub(super) fn assert_stalled_handshake_is_cut(addr: SocketAddr) {
    let started = Instant::now();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0; 1];
    let read = sock.read(&mut byte);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the server sent something: {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "closed after {waited:?}, not the 5 s header timeout"
    );
}
