//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Produces the body of `/metrics`, or an error message.
pub type Scrape = Arc<dyn Fn() -> anyhow::Result<String> + Send + Sync>;

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, scrape: Scrape) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scrape = Arc::clone(&scrape);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let scrape = Arc::clone(&scrape);
                async move { Ok::<_, Infallible>(route(&req, &scrape)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection from {peer}: {e}");
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
        (&Method::GET | &Method::HEAD, "/") => respond(
            StatusCode::OK,
            "text/html",
            "<html><body><h1>listendrop</h1><p><a href=\"/metrics\">metrics</a></p></body></html>\n"
                .into(),
        ),
        (_, "/metrics" | "/healthz" | "/") => {
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

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
