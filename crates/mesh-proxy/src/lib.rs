//! The devmesh proxy: the HTTP front door on a loopback port, routing to
//! local backends or through `/devmesh/http/1` tunnels to other nodes, and the
//! provider side that serves tunnels from other nodes.
//!
//! ```no_run
//! # async fn demo(node: mesh_core::NodeHandle) -> Result<(), mesh_proxy::Error> {
//! let routing = mesh_proxy::policy::Routing::new(Default::default());
//! let proxy = mesh_proxy::Proxy::new(node, routing);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(proxy.clone().serve_tunnels(shutdown.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! proxy.clone().serve(listener, shutdown).await?;
//! // `serve` returned: the front door is closed; let what runs finish.
//! let drained = proxy.drain(std::time::Duration::from_secs(5)).await;
//! # let _ = drained;
//! # Ok(()) }
//! ```
//!
//! Modules: `front` ([`Proxy::serve`]: accept, TLS peek, the request
//! pipeline), `stamp` (the `X-DevMesh-*` response headers), `replay` (the
//! kept copy of a request), `upgrade` (splicing upgraded connections),
//! `provider` ([`Proxy::serve_tunnels`]), `upstream` (HTTP/1.1 and HTTP/2
//! connections to backends and providers, and the local connect), `drain`
//! (tracked tasks, [`Proxy::drain`]), [`health`] (checks of local backends),
//! [`tcp`] (raw TCP services: [`Proxy::serve_tcp_tunnels`] and
//! [`Proxy::serve_tcp_listeners`]), [`console`] (the node's site on
//! `devmesh.localhost`: dashboard, graph, live state).

mod activity;
pub mod backend;
mod body;
mod bounded;
pub mod choose;
pub mod console;
mod drain;
mod error;
pub mod forward;
mod front;
pub mod health;
pub mod inspect;
pub mod metrics;
mod observe;
mod pages;
pub mod policy;
mod provider;
mod replay;
pub mod reqlog;
pub mod route;
pub use streams::{MAX_TUNNEL_STREAMS, MAX_TUNNEL_STREAMS_PER_PEER};
mod stamp;
mod streams;
pub mod tcp;
pub mod trace;
pub mod tunnel;
mod upgrade;
mod upstream;

use std::{sync::Arc, time::Duration};

use http::HeaderName;
use hyper_util::{rt::TokioExecutor, server::conn::auto};
use mesh_core::NodeHandle;
use tokio_util::sync::CancellationToken;

pub use body::{Body, UpBody};
pub use drain::Drained;
pub use error::{
    Chain, ConnectAttempt, ConnectFailure, Error, ParseError, ProbeError, TunnelError,
    UpstreamError,
};
pub use front::limit::DEFAULT_MAX_CONNECTIONS;
pub use observe::Observe;
pub use replay::MAX_REPLAY_BODY;
pub use route::SERVICE_HEADER;

/// Request header with a version requirement for this request: `^2.1`.
pub const REQUIRE_HEADER: HeaderName = HeaderName::from_static("x-devmesh-require");
/// Request header pinning this request to one provider: its peer id.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("x-devmesh-peer");
/// Request header choosing the version mode of this request: `strict` or `warn`.
pub const VERSIONS_HEADER: HeaderName = HeaderName::from_static("x-devmesh-versions");

/// The proxy: front door and tunnel server of one node.
pub struct Proxy {
    node: NodeHandle,
    routing: Arc<policy::Routing>,
    /// HTTP/1.1 and HTTP/2 serving of front-door connections.
    http: auto::Builder<TokioExecutor>,
    upstreams: Arc<upstream::Upstreams>,
    tunnel_streams: Arc<streams::StreamBudget>,
    peer_names: stamp::PeerNames,
    /// HTTPS on the front door's port, when enabled.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Front-door connections, upgraded connections and tunnel streams.
    tasks: drain::Tasks,
    /// Cancelled when the front door closes: its connections finish.
    closing: CancellationToken,
    /// Loopback listeners of remote TCP services.
    tcp: Arc<tcp::Listeners>,
    /// Metrics (and what else observes requests).
    observe: Observe,
    /// The front door's address, once it listens (replays go through it).
    front_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// What the node's site (the dashboard) shows.
    console: Arc<console::Console>,
    /// How many front-door connections are served at once.
    front_limit: front::limit::ConnectionLimit,
}

impl Proxy {
    /// A proxy for `node`, routing by `routing`, its front door speaking
    /// plain HTTP only.
    pub fn new(node: NodeHandle, routing: Arc<policy::Routing>) -> Arc<Self> {
        Self::with_tls(node, routing, None)
    }

    /// A proxy for `node`, routing by `routing`, whose front door also serves
    /// HTTPS, on the same port, with `tls` (see `mesh_tls::server_config`).
    pub fn with_tls(
        node: NodeHandle,
        routing: Arc<policy::Routing>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Arc<Self> {
        Self::observed(node, routing, tls, Observe::default())
    }

    /// [`Proxy::with_tls`], counting and recording what `observe` asks for.
    pub fn observed(
        node: NodeHandle,
        routing: Arc<policy::Routing>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        observe: Observe,
    ) -> Arc<Self> {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // Uploads from HTTP/2 clients are not held to 64 KiB windows.
        http.http2().adaptive_window(true);
        // A client that never finishes a request's head (or an idle
        // keep-alive connection) does not hold a connection for ever.
        http.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(front::limit::HEADER_READ_TIMEOUT);
        let console = Arc::new(console::Console::new(&node, observe.metrics.is_some()));
        Arc::new(Self {
            routing,
            http,
            upstreams: upstream::Upstreams::new(node.clone(), observe.metrics.clone()),
            node,
            tunnel_streams: Arc::default(),
            peer_names: stamp::PeerNames::default(),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            tasks: drain::Tasks::default(),
            closing: CancellationToken::new(),
            tcp: Arc::default(),
            console,
            observe,
            front_addr: std::sync::OnceLock::new(),
            front_limit: front::limit::ConnectionLimit::new(front::limit::DEFAULT_MAX_CONNECTIONS),
        })
    }

    /// The inspector, when requests are captured: its buffer and the feed
    /// of new entries ([`inspect::Inspector::subscribe`]).
    pub fn inspector(&self) -> Option<Arc<inspect::Inspector>> {
        self.observe.inspector.clone()
    }

    /// The TCP listeners' settings and state, for the control API.
    pub fn tcp_listeners(&self) -> Arc<tcp::Listeners> {
        self.tcp.clone()
    }

    /// Waits until every front-door connection (upgraded ones included) and
    /// tunnel stream has ended, at most `grace`, then aborts what is left.
    /// Call it once [`Proxy::serve`] and [`Proxy::serve_tunnels`] returned;
    /// open front-door connections are told to finish (as when the front
    /// door closes) in any case.
    pub async fn drain(&self, grace: Duration) -> Drained {
        self.closing.cancel();
        self.tasks.drain(grace).await
    }
}

#[cfg(test)]
mod shutdown_tests;
