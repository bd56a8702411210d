//! The node's own site on the front door, `Host: devmesh.localhost` (any
//! port, or that authority in an absolute-form URI): the live dashboard
//! and its JSON API.
//!
//! [`Proxy::site`] dispatches by path: `/metrics` (the Prometheus text),
//! `/api/requests*` (the inspector's API, [`inspector`]), `/` and
//! `/assets/*` (the page, built into the binary: [`assets`]), `/api/state`
//! (the dashboard's document, [`state::State`]), `/api/graph` (the
//! [`graph::Graph`]: JSON, `?format=dot` or `?format=text`) and
//! `/api/events` (server-sent events: the state again each time it
//! changes, [`events`]).
//!
//! [`Console`] owns what the site shows: one task ([`Console::start`])
//! samples the request duration histogram of the metrics every second
//! ([`rates`]) and follows the node's snapshot. While an event stream is
//! open it rebuilds the state on each change of either and publishes it
//! on a `watch` channel, which the streams follow; with no stream open
//! the state is built only when a request asks for it. A node keeps its
//! console closed nearly all the time, and rebuilding and encoding the
//! state for every ping of a hundred peers was a fifth of an idle node's
//! CPU. A service that appears on another node is on the page as soon as
//! this node's snapshot has it.

mod assets;
mod events;
pub mod graph;
pub mod rates;
pub mod state;

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use mesh_core::{NodeHandle, Snapshot};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Proxy, metrics::Metrics};

/// The host name of the node's site.
pub const SITE_HOST: &str = crate::metrics::METRICS_HOST;

/// How often the metrics are sampled for rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Body of the site's responses: a page, a JSON document, or an event
/// stream.
pub type SiteBody = UnsyncBoxBody<Bytes, Infallible>;

/// Whether a front-door request is for the node's site: its `Host` (or
/// the authority of its absolute-form URI) is `devmesh.localhost`, with or
/// without a port.
pub fn is_site_request(uri: &Uri, headers: &HeaderMap) -> bool {
    let host = match uri.host() {
        Some(host) => host,
        None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => host.rsplit_once(':').map_or(host, |(name, _)| name),
            None => return false,
        },
    };
    host.eq_ignore_ascii_case(SITE_HOST)
}

/// The state as published: the document and its JSON.
#[derive(Debug)]
pub(crate) struct Published {
    state: state::State,
    /// `state` as JSON.
    json: Bytes,
}

impl Published {
    fn new(state: state::State) -> Self {
        let json = serde_json::to_vec(&state).unwrap_or_default();
        Self {
            state,
            json: Bytes::from(json),
        }
    }
}

/// What the site shows, and the task that keeps it current.
pub(crate) struct Console {
    node: NodeHandle,
    /// Whether the node keeps metrics (and so rates).
    metrics: bool,
    /// The rates' samples: taken by the task, read by whoever builds.
    history: Mutex<rates::History>,
    live: watch::Sender<Arc<Published>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("metrics", &self.metrics)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// The console of `node`, showing its current snapshot until started.
    pub(crate) fn new(node: &NodeHandle, metrics: bool) -> Self {
        let state = state::State::build(&node.snapshot(), &[], Default::default(), 0.0, metrics);
        let (live, _) = watch::channel(Arc::new(Published::new(state)));
        Self {
            node: node.clone(),
            metrics,
            history: Mutex::default(),
            live,
            started: AtomicBool::new(false),
        }
    }

    /// Starts the task that keeps the state current (once; later calls do
    /// nothing). It ends when `closing` is cancelled.
    pub(crate) fn start(
        self: &Arc<Self>,
        node: NodeHandle,
        metrics: Option<Arc<Metrics>>,
        closing: CancellationToken,
    ) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(self.clone().run(node, metrics, closing));
    }

    async fn run(
        self: Arc<Self>,
        node: NodeHandle,
        metrics: Option<Arc<Metrics>>,
        closing: CancellationToken,
    ) {
        let mut snapshots = node.watch();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = closing.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() { return },
                _ = tick.tick() => {
                    if let Some(m) = &metrics {
                        let sample = rates::parse(&m.duration_text());
                        self.history().push(Instant::now(), sample);
                    }
                }
            }
            snapshots.borrow_and_update();
            // Only open event streams need each change as it comes.
            if self.live.receiver_count() > 0 {
                self.publish();
            }
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, rates::History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Builds the state of the node's snapshot and the rates, and publishes
    /// it when it differs from the last one.
    fn publish(&self) {
        let snapshot: Arc<Snapshot> = self.node.snapshot();
        let state = {
            let history = self.history();
            // Whole seconds: the window's length jitters with the timer.
            let window = history.seconds().round();
            state::State::build(
                &snapshot,
                &history.edges(),
                history.services(),
                window,
                self.metrics,
            )
        };
        self.live.send_if_modified(|current| {
            if current.state == state {
                return false;
            }
            *current = Arc::new(Published::new(state));
            true
        });
    }

    /// The state as it is now.
    fn current(&self) -> Arc<Published> {
        self.publish();
        self.live.borrow().clone()
    }

    /// A stream's view of the state, current from the start.
    fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        let live = self.live.subscribe();
        self.publish();
        live
    }
}

/// A response with `body` of `content_type`.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SiteBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

const JSON: &str = "application/json";

/// `{"error": text}` with `status`.
fn json_error(status: StatusCode, text: &str) -> Response<SiteBody> {
    let body = serde_json::json!({ "error": text }).to_string();
    respond(status, JSON, body)
}

/// Whether a request that changes something comes from a page of
/// another site (its `Origin` is not the node's site): such requests are
/// refused, so no web page can replay requests through the dashboard's
/// API.
pub(crate) fn cross_site(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    !name.eq_ignore_ascii_case(SITE_HOST)
}

impl Proxy {
    /// Answers a request for the node's site (see [`is_site_request`]).
    pub(crate) async fn site(&self, req: Request<Incoming>) -> Response<SiteBody> {
        self.console.start(
            self.node.clone(),
            self.observe.metrics.clone(),
            self.closing.clone(),
        );
        let path = req.uri().path().to_owned();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is answered here");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match path.as_str() {
            "/api/state" => respond(StatusCode::OK, JSON, self.console.current().json.clone()),
            "/api/graph" => self.graph(req.uri().query().unwrap_or("")),
            "/api/events" => events::response(self.console.subscribe(), self.closing.clone()),
            _ => match assets::find(&path) {
                Some(asset) => asset.response(),
                None if path.starts_with("/api/") => json_error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no API at {path}: there are /api/state, /api/graph, /api/events and /api/requests"
                    ),
                ),
                None => json_error(
                    StatusCode::NOT_FOUND,
                    &format!("nothing at {path}: the dashboard is at /"),
                ),
            },
        }
    }

    /// `/api/graph`: JSON, or `format=dot` / `format=text`.
    fn graph(&self, query: &str) -> Response<SiteBody> {
        let published = self.console.current();
        let graph = &published.state.graph;
        let format = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("format="))
            .unwrap_or("json");
        match format {
            "json" => respond(
                StatusCode::OK,
                JSON,
                serde_json::to_vec(graph).unwrap_or_default(),
            ),
            "dot" => respond(
                StatusCode::OK,
                "text/vnd.graphviz; charset=utf-8",
                graph.to_dot(),
            ),
            "text" => respond(StatusCode::OK, "text/plain; charset=utf-8", graph.to_text()),
            other => json_error(
                StatusCode::BAD_REQUEST,
                &format!("unknown format {other:?}: use format=json, format=dot or format=text"),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
