//! `GET /metrics`: the backend's counters and latency histograms in the Prometheus text format
//! (`keyway_runtime::metrics`), plus `keyway_ready`, 0 while the process waits for Redis and 1
//! once its roles run. Any other path is 404, any other method on `/metrics` 405.
//!
//! HTTP/1.1 only, on hyper's connection state machine (header reads time out, so a slow
//! client cannot hold a connection open forever); there is no TLS or authentication: bind it to
//! an address only the scraper can reach.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyway_runtime::metrics::Metrics;
use tokio::net::TcpListener;

/// The content type of the Prometheus text exposition format.
pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` shows: empty until the backend exists, then its metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Source {
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

impl Source {
    /// Show `metrics` from now on (the first call wins).
    pub(crate) fn set(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let ready = u8::from(self.metrics.get().is_some());
        let mut text = format!(
            "# HELP keyway_ready 1 once this process is connected to Redis and runs its roles.\n\
             # TYPE keyway_ready gauge\n\
             keyway_ready {ready}\n"
        );
        if let Some(metrics) = self.metrics.get() {
            text.push_str(&metrics.render_prometheus());
        }
        text
    }
}

/// The metrics endpoint, bound and not yet serving.
pub(crate) struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Bind `addr` (port 0 picks a free one): fails at once when the address is taken.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Endpoint, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        Ok(Endpoint { listener, addr })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `source` until the task is dropped or aborted.
    pub(crate) async fn serve(self, source: Source) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("metrics endpoint: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = source.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = respond(&request, &source);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("metrics endpoint: connection ended: {e}");
                }
            });
        }
    }
}

fn respond(request: &Request<Incoming>, source: &Source) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
        response
    };
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: try /metrics\n".into());
    }
    match *request.method() {
        // hyper sends no body in answer to HEAD.
        Method::GET | Method::HEAD => text(StatusCode::OK, source.render()),
        _ => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: GET /metrics\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_zero_until_the_backend_metrics_are_there() {
        let source = Source::default();
        assert!(source.render().ends_with("keyway_ready 0\n"));
        let metrics = Arc::new(Metrics::new());
        metrics.count("keyway_publish_total", &[("topic", "t")], 1);
        source.set(metrics);
        let text = source.render();
        assert!(text.contains("keyway_ready 1\n"), "{text}");
        assert!(
            text.contains("keyway_publish_total{topic=\"t\"} 1\n"),
            "{text}"
        );
    }
}
