//! The front door's own host, `devmesh.localhost` (any port): never routed
//! to a service. The one dispatch of its paths: `/metrics`, the
//! inspector's `/api/requests…` ([`super::api`]), and the dashboard's
//! pages, assets and API ([`crate::console`]).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;

use super::observe::Observed;
use crate::{Proxy, console, metrics};

pub(crate) use crate::metrics::is_own_host;

impl Proxy {
    /// A request for the front door itself.
    pub(super) async fn own(&self, req: Request<Incoming>) -> Response<Observed> {
        let path = req.uri().path();
        if path == metrics::METRICS_PATH {
            return match self.observe.metrics.as_deref() {
                Some(m) => metrics::response(m).map(|b| Observed::new(Either::Right(b), None)),
                None => text(
                    StatusCode::NOT_FOUND,
                    "metrics are off on this node (devmeshd --metrics off)\n",
                ),
            };
        }
        if path == "/api/requests" || path.starts_with("/api/requests/") {
            let changes = req.method() != Method::GET && req.method() != Method::HEAD;
            if changes && console::cross_site(&req) {
                tracing::debug!(path, "refused a cross-site request to the inspector");
                return error(
                    StatusCode::FORBIDDEN,
                    "cross-site requests to the node's API are refused; use the dashboard at http://devmesh.localhost:<proxy-port>/",
                );
            }
            return self.inspect_api(req).await;
        }
        // The dashboard: its page, assets and API.
        self.site(req)
            .await
            .map(|body| Observed::own(body.map_err(|never| match never {}).boxed_unsync()))
    }
}

/// A plain-text answer of the front door.
pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Observed> {
    let mut resp = Response::new(Observed::new(
        Either::Right(Full::new(Bytes::from_static(body.as_bytes()))),
        None,
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON answer of the front door.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Observed> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Observed::new(
        Either::Right(Full::new(Bytes::from(body))),
        None,
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error: `{"error": "…"}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response<Observed> {
    json(status, &serde_json::json!({ "error": message.into() }))
}
