//! The inspector's JSON API on `devmesh.localhost` (docs/observability.md,
//! "Inspector API"):
//!
//! - `GET /api/requests?service=S&status=5xx&limit=N`: summaries, newest first;
//!   with `follow=1` an event stream instead, one `data:` line per new entry;
//! - `GET /api/requests/{id}`: one entry in full, with `provider_side`;
//! - `POST /api/requests/{id}/replay` ([`replay`]).

mod query;
mod replay;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use mesh_core::PeerId;
use tokio::sync::broadcast;

use self::query::Query;
use super::{
    observe::{BoxError, Observed},
    own,
};
use crate::{
    Chain, Proxy,
    inspect::{Entry, Filter, Inspector, Side},
};

/// Entries a listing shows unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// How often an idle event stream sends a comment, so proxies and clients
/// keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

impl Proxy {
    /// A request under `/api/requests`.
    pub(super) async fn inspect_api(&self, req: Request<Incoming>) -> Response<Observed> {
        let Some(inspector) = self.observe.inspector.clone() else {
            return own::error(
                StatusCode::NOT_FOUND,
                "the inspector is off on this node; start devmeshd without `--inspect off`",
            );
        };
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let rest = path.strip_prefix("/api/requests").unwrap_or_default();
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let method = req.method().clone();
        match (method, parts.as_slice()) {
            (Method::GET, []) => match Query::parse(req.uri().query().unwrap_or("")) {
                Ok(q) if q.follow => self.follow(&inspector, q.filter),
                Ok(q) => list(&inspector, &q.filter, q.limit.unwrap_or(DEFAULT_LIMIT)),
                Err(e) => own::error(StatusCode::BAD_REQUEST, e),
            },
            (Method::GET, [id]) => match id.parse::<u64>() {
                Ok(id) => self.one(&inspector, id).await,
                Err(_) => bad_id(id),
            },
            (Method::POST, [id, "replay"]) => match id.parse::<u64>() {
                Ok(id) => self.replay(&inspector, id, req).await,
                Err(_) => bad_id(id),
            },
            (_, [] | [_] | [_, "replay"]) => own::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET /api/requests, GET /api/requests/{id} or POST /api/requests/{id}/replay",
            ),
            _ => own::error(StatusCode::NOT_FOUND, format!("no such API path: {path}")),
        }
    }

    /// One entry in full, with its provider's side when it went through
    /// a tunnel.
    async fn one(&self, inspector: &Inspector, id: u64) -> Response<Observed> {
        let Some(entry) = inspector.get(id) else {
            return gone(id);
        };
        let mut value = serde_json::to_value(&*entry).unwrap_or_default();
        let (side, reason) = match self.other_side(&entry).await {
            Ok(side) => (side, None),
            Err(reason) => (serde_json::Value::Null, Some(reason)),
        };
        value["provider_side"] = side;
        if let Some(reason) = reason {
            value["provider_side_reason"] = reason.into();
        }
        own::json(StatusCode::OK, &value)
    }

    /// The provider's capture of `entry`, or why there is none.
    async fn other_side(&self, entry: &Entry) -> Result<serde_json::Value, String> {
        if entry.side == Side::Provider {
            return Err("this entry is the provider's side".into());
        }
        match entry.route.as_str() {
            "direct" | "relayed" => {}
            "local" => {
                return Err("served by this node's own backend: there is no other node".into());
            }
            _ => return Err("no provider served this request".into()),
        }
        let peer: PeerId = (entry.provider.parse())
            .map_err(|_| format!("the provider {:?} is not a peer id", entry.provider))?;
        self.provider_side(peer, &entry.trace_id)
            .await
            .map_err(|e| Chain(&e).to_string())
    }

    /// New entries as server-sent events until the front door closes.
    fn follow(&self, inspector: &Inspector, filter: Filter) -> Response<Observed> {
        let state = (inspector.subscribe(), filter, self.closing.clone());
        let events = futures::stream::unfold(state, |(mut feed, filter, closing)| async move {
            loop {
                let next = tokio::select! {
                    () = closing.cancelled() => return None,
                    next = tokio::time::timeout(KEEPALIVE, feed.recv()) => next,
                };
                let line = match next {
                    Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                    Ok(Ok(entry)) if filter.matches(&entry) => event(&entry),
                    Ok(Ok(_)) => continue,
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                        Bytes::from(format!(": missed {n} entries\n\n"))
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                };
                return Some((
                    Ok::<_, BoxError>(Frame::data(line)),
                    (feed, filter, closing),
                ));
            }
        });
        // The first bytes right away: the client knows the stream is on.
        let hello = futures::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b": following\n\n")))
        });
        let body = StreamBody::new(hello.chain(events)).boxed_unsync();
        let mut resp = Response::new(Observed::own(body));
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        resp
    }
}

/// One entry's summary as an event.
fn event(entry: &Entry) -> Bytes {
    let json = serde_json::to_string(&entry.summary()).unwrap_or_default();
    Bytes::from(format!("data: {json}\n\n"))
}

/// The summaries of a listing.
fn list(inspector: &Inspector, filter: &Filter, limit: usize) -> Response<Observed> {
    let entries: Vec<Arc<Entry>> = inspector.list(filter, limit);
    let summaries: Vec<serde_json::Value> = entries
        .iter()
        .filter_map(|e| serde_json::to_value(e.summary()).ok())
        .collect();
    own::json(StatusCode::OK, &serde_json::Value::Array(summaries))
}

fn bad_id(id: &str) -> Response<Observed> {
    own::error(
        StatusCode::BAD_REQUEST,
        format!("{id:?} is not an entry id; ids are the numbers `GET /api/requests` lists"),
    )
}

fn gone(id: u64) -> Response<Observed> {
    own::error(
        StatusCode::NOT_FOUND,
        format!(
            "no entry {id}: it never existed or was evicted (the buffer keeps the most recent requests)"
        ),
    )
}
