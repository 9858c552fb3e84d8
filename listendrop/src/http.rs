//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz`.
//!
//! Hardened for a host agent: only GET/HEAD of these two paths (anything else is 404),
//! small header limits, request bodies never read, a header read timeout, a write timeout, a
//! lifetime cap per connection and a cap on concurrent connections, so idle or hostile
//! clients cannot starve the scraper or the daemon.
//!
//! With `--web.config.file` (see `web/`) connections are TLS and requests need basic
//! auth, under the same limits: the TLS handshake must end within the header timeout and
//! is covered by the write timeout and the connection's lifetime.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{io::AsyncWriteExt as _, net::TcpListener, sync::Semaphore};

use crate::web::{Endpoint, Refusal};

/// Produces the body of `/metrics`, or an error message.
pub type Scrape = Arc<dyn Fn() -> anyhow::Result<String> + Send + Sync>;

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once unless `--web.max-connections` says otherwise; more are
/// answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (keep-alive included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Time a write may wait for the client to read (a stalled reader holds a connection slot
/// and a response in memory).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request head buffer (request line + headers); larger requests get 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header lines accepted.
const MAX_HEADERS: usize = 32;

/// Serves requests on `listener` until the task is dropped, with the TLS and
/// authentication of `web`, at most `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    scrape: Scrape,
    web: Arc<Endpoint>,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("HTTP connection from {peer} refused: {max_connections} already open");
            if web.scheme() == "https" {
                // Plain text would only garble a TLS client's handshake: just close.
                continue;
            }
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
            continue;
        };
        let scrape = Arc::clone(&scrape);
        let web = Arc::clone(&web);
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let conn = async {
                // The TLS handshake (none without TLS) gets the time the headers get.
                let stream = tokio::time::timeout(HEADER_TIMEOUT, web.accept(Box::pin(stream)))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                let service = service_fn(move |req| {
                    let scrape = Arc::clone(&scrape);
                    let web = Arc::clone(&web);
                    async move {
                        let mut resp = match web.admit(req.headers()).await {
                            Ok(()) => route(&req, &scrape),
                            Err(refusal) => refused(refusal),
                        };
                        web.add_headers(resp.headers_mut());
                        Ok::<_, Infallible>(resp)
                    }
                });
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .max_headers(MAX_HEADERS)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => tracing::debug!("HTTP connection from {peer}: {e}"),
                Err(_) => tracing::debug!(
                    "HTTP connection from {peer} closed after {CONNECTION_LIFETIME:?}"
                ),
                Ok(Ok(())) => {}
            }
        });
    }
}

fn route(req: &Request<Incoming>, scrape: &Scrape) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => match scrape() {
            Ok(body) => respond(StatusCode::OK, METRICS_CONTENT_TYPE, body),
            Err(e) => {
                tracing::error!("scrape failed: {e:#}");
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("scrape failed: {e:#}\n"),
                )
            }
        },
        (&Method::GET | &Method::HEAD, "/healthz") => {
            respond(StatusCode::OK, "text/plain", "ok\n".into())
        }
        (_, "/metrics" | "/healthz") => {
            let mut resp = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET\n".into(),
            );
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            resp
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// 401 asking for basic auth, or 429 (what exporter-toolkit answers).
fn refused(refusal: Refusal) -> Response<Full<Bytes>> {
    match refusal {
        Refusal::Unauthorized => {
            let mut resp = respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "Unauthorized\n".into(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic"),
            );
            resp
        }
        Refusal::TooManyRequests => respond(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "Too Many Requests\n".into(),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
