//! The secure endpoint: `--web.config.file` in the exporter-toolkit format (TLS, client
//! certificates, basic auth, extra headers), read again when it changes.
//!
//! [`Endpoint`] is what the HTTP server asks, per connection ([`Endpoint::accept`]: the
//! TLS handshake, or none) and per request ([`Endpoint::admit`]: the rate limit and basic
//! auth; [`Endpoint::add_headers`]).
//! Both first check, with one `stat` per file, whether the configuration file or a
//! certificate, key or CA file it names changed (modification or change time, size,
//! inode: a rewrite, a `mv` or a Kubernetes Secret update). A changed set is loaded
//! anew and replaces the old one only when all of it is valid; otherwise the old one
//! stays and the error is logged once per change. So a rotated certificate is served to
//! the next connection, without a restart, and a broken file never stops the endpoint.
//! At start an invalid file is fatal instead, with the file and the reason.
//!
//! Whether the endpoint speaks TLS is decided at start: a reload that would switch
//! between HTTPS and plain HTTP is refused (it needs a restart), as with exporter-toolkit.

pub mod auth;
pub mod client;
pub mod config;
pub mod tls;

use std::{
    collections::BTreeMap,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use config::WebConfigError;

use crate::util::lock;

/// The configuration in force.
struct Active {
    /// The handshake's configuration; `None`: plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// User → bcrypt hash; empty: no authentication.
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<config::RateLimit>,
    /// What its files were when they were read.
    files: Stamps,
}

/// Why a request is refused, before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or wrong basic auth credentials.
    Unauthorized,
    /// 429: over `rate_limit`.
    TooManyRequests,
}

/// `rate_limit`'s token bucket (golang.org/x/time/rate's `Limiter.Allow`): full at start,
/// one request earned per interval, at most `burst` saved.
#[derive(Debug)]
struct Bucket {
    limit: config::RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: config::RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Takes a token if there is one.
    fn allow(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64()
            / self.limit.interval.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The identity of the contents of each file of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stamps(Vec<(PathBuf, Option<Stamp>)>);

/// What changes when a file is written or replaced (`None` in [`Stamps`]: unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamps {
    /// The stamps of `paths` now (following symlinks, as reading does).
    fn of(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self(
            paths
                .into_iter()
                .map(|path| {
                    let stamp = std::fs::metadata(&path).ok().map(|m| Stamp {
                        dev: m.dev(),
                        ino: m.ino(),
                        len: m.len(),
                        mtime: (m.mtime(), m.mtime_nsec()),
                        ctime: (m.ctime(), m.ctime_nsec()),
                    });
                    (path, stamp)
                })
                .collect(),
        )
    }

    /// The same files, stamped again.
    fn now(&self) -> Self {
        Self::of(self.0.iter().map(|(path, _)| path.clone()))
    }
}

/// The web configuration file and what it set up.
pub struct Endpoint {
    /// `None`: no `--web.config.file`, plain HTTP for everyone.
    path: Option<PathBuf>,
    active: RwLock<Arc<Active>>,
    /// The files of the last attempt that failed, as they were then: it is not retried
    /// (nor logged again) until one of them changes. Held while reloading, so that one
    /// task reloads and the others wait for its result.
    failed: Mutex<Option<Stamps>>,
    auth: auth::Authenticator,
    /// Kept across reloads while `rate_limit` stays the same.
    bucket: Mutex<Option<Bucket>>,
}

impl Endpoint {
    /// The endpoint `--web.config.file` asks for: plain HTTP without it, otherwise what the
    /// file says, or the reason it cannot be used.
    pub fn new(path: Option<&Path>) -> Result<Arc<Self>, WebConfigError> {
        let active = match path {
            None => Active {
                tls: None,
                users: BTreeMap::new(),
                headers: Vec::new(),
                rate_limit: None,
                files: Stamps::default(),
            },
            Some(path) => load(path).1?,
        };
        Ok(Arc::new(Self {
            path: path.map(Path::to_owned),
            active: RwLock::new(Arc::new(active)),
            failed: Mutex::new(None),
            auth: auth::Authenticator::new(),
            bucket: Mutex::new(None),
        }))
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.current().tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A sentence for the start-up log: what protects the endpoint.
    pub fn describe(&self) -> String {
        let active = self.current();
        let Some(path) = &self.path else {
            return "no --web.config.file: plain HTTP, no authentication".into();
        };
        format!(
            "web configuration {}: {}, {}",
            path.display(),
            if active.tls.is_some() {
                "TLS"
            } else {
                "plain HTTP"
            },
            if active.users.is_empty() {
                "no basic auth".to_owned()
            } else {
                format!(
                    "basic auth ({} user{})",
                    active.users.len(),
                    if active.users.len() == 1 { "" } else { "s" }
                )
            }
        )
    }

    /// Reloads the configuration if one of its files changed since it was read.
    pub fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let active = self.current();
        if active.files.now() == active.files {
            return;
        }
        let mut failed = lock(&self.failed);
        // Another task may have reloaded while this one waited.
        let active = self.current();
        if active.files.now() == active.files {
            return;
        }
        if failed.as_ref().is_some_and(|f| f.now() == *f) {
            return;
        }
        let (files, result) = load(path);
        let result = result.and_then(|new| {
            if new.tls.is_some() != active.tls.is_some() {
                return Err(WebConfigError::Invalid {
                    path: path.clone(),
                    key: "tls_server_config".into(),
                    problem: "switching between HTTPS and plain HTTP needs a restart of the \
                              daemon"
                        .into(),
                });
            }
            Ok(new)
        });
        match result {
            Ok(new) => {
                tracing::info!("reloaded the web configuration {}", path.display());
                *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                *failed = None;
            }
            Err(e) => {
                tracing::error!("{e}; keeping the previous web configuration");
                *failed = Some(files);
            }
        }
    }

    /// Takes a new connection: the TLS handshake when the configuration has TLS (with the
    /// configuration current at this connection), else the stream as it is.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<Stream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.refresh();
        let tls = self.current().tls.clone();
        match tls {
            None => Ok(Stream::Plain(io)),
            Some(config) => {
                let stream = tokio_rustls::TlsAcceptor::from(config).accept(io).await?;
                Ok(Stream::Tls(Box::new(stream)))
            }
        }
    }

    /// Whether a request with these headers may be served: within `rate_limit`, then
    /// with the credentials of a user of `basic_auth_users` (exporter-toolkit's order).
    pub async fn admit(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.refresh();
        let active = self.current();
        if let Some(limit) = active.rate_limit {
            let now = Instant::now();
            let mut bucket = lock(&self.bucket);
            let bucket = match &mut *bucket {
                Some(b) if b.limit == limit => b,
                other => other.insert(Bucket::new(limit, now)),
            };
            if !bucket.allow(now) {
                return Err(Refusal::TooManyRequests);
            }
        }
        let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if self.auth.allows(&active.users, authorization).await {
            Ok(())
        } else {
            Err(Refusal::Unauthorized)
        }
    }

    /// Adds the configured `http_server_config.headers` to a response.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.current().headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    fn current(&self) -> Arc<Active> {
        Arc::clone(&self.active.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reads and validates the configuration and the files it names. Returns, with the
/// result, the stamps of the files it read, taken before each was read: a write racing
/// with the read is seen at the next check.
fn load(path: &Path) -> (Stamps, Result<Active, WebConfigError>) {
    let mut files = Stamps::of([path.to_owned()]);
    let config = match config::read(path) {
        Ok(config) => config,
        Err(e) => return (files, Err(e)),
    };
    files.0.extend(Stamps::of(named_files(&config)).0);
    let tls = match config.tls.as_ref().map(|tls| tls::server_config(path, tls)) {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => return (files, Err(e)),
    };
    let headers = config
        .headers
        .iter()
        // Names from exporter-toolkit's list and values checked by config::parse: none
        // is left out.
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    let active = Active {
        tls,
        users: config.users,
        headers,
        rate_limit: config.rate_limit,
        files: files.clone(),
    };
    (files, Ok(active))
}

/// The certificate, key and CA files a configuration names.
fn named_files(config: &config::WebConfig) -> Vec<PathBuf> {
    let Some(tls) = &config.tls else {
        return Vec::new();
    };
    [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|pem| match pem {
            config::Pem::File(file) => Some(file.clone()),
            config::Pem::Inline(_) => None,
        })
        .collect()
}

/// A connection: plain, or TLS over it.
pub enum Stream<IO> {
    /// Plain HTTP.
    Plain(IO),
    /// HTTPS.
    Tls(Box<tokio_rustls::server::TlsStream<IO>>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_allows_burst_then_one_per_interval() {
        let start = Instant::now();
        let limit = config::RateLimit {
            interval: Duration::from_secs(1),
            burst: 3,
        };
        let mut bucket = Bucket::new(limit, start);
        let allowed = |bucket: &mut Bucket, at: Duration, n: usize| {
            (0..n).filter(|_| bucket.allow(start + at)).count()
        };
        assert_eq!(allowed(&mut bucket, Duration::ZERO, 5), 3, "the burst");
        assert_eq!(allowed(&mut bucket, Duration::from_millis(500), 5), 0);
        assert_eq!(allowed(&mut bucket, Duration::from_millis(1000), 5), 1);
        // Idle for long: no more than the burst saved.
        assert_eq!(allowed(&mut bucket, Duration::from_secs(100), 10), 3);
        // burst 0 allows nothing, as in Go.
        let mut none = Bucket::new(config::RateLimit { burst: 0, ..limit }, start);
        assert_eq!(allowed(&mut none, Duration::from_secs(100), 5), 0);
    }
}
