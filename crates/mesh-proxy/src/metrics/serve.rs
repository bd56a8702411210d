//! Serving the metrics: on the front door for `Host: devmesh.localhost`
//! (any port) and path `/metrics`, and on a listener of its own
//! (`devmeshd --metrics <addr>`).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Metrics;

/// The host name the front door keeps for itself.
pub const METRICS_HOST: &str = "devmesh.localhost";
/// The path of the metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a front-door request asks for the metrics: `GET /metrics` with
/// `Host: devmesh.localhost` (port optional) or that authority in the URI.
pub fn is_metrics_request(uri: &Uri, headers: &HeaderMap) -> bool {
    uri.path() == METRICS_PATH && is_own_host(uri, headers)
}

/// Whether a front-door request is for the front door itself: `Host:
/// devmesh.localhost` (port optional) or that authority in the URI.
pub fn is_own_host(uri: &Uri, headers: &HeaderMap) -> bool {
    let host = match uri.host() {
        Some(host) => host,
        None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => host.rsplit_once(':').map_or(host, |(name, _)| name),
            None => return false,
        },
    };
    host.eq_ignore_ascii_case(METRICS_HOST)
}

/// The metrics as an HTTP response.
pub(crate) fn response(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(metrics.encode())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(OPENMETRICS),
    );
    resp
}

/// Serves `GET /metrics` (any host) on `listener` until `shutdown` is
/// cancelled; other paths get 404.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    match listener.local_addr() {
        Ok(addr) => info!(%addr, "metrics listening"),
        Err(e) => warn!(error = %e, "metrics listener has no address"),
    }
    loop {
        let (tcp, client) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let resp = if req.uri().path() == METRICS_PATH {
                response(&metrics)
            } else {
                let mut resp = Response::new(Full::new(Bytes::from_static(
                    b"not found: metrics are at /metrics\n",
                )));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                resp
            };
            async move { Ok::<_, Infallible>(resp) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                debug!(%client, error = %e, "metrics connection ended with an error");
            }
        });
    }
}
