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
//! proxy.serve(listener, shutdown).await?;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod choose;
mod error;
pub mod forward;
pub mod health;
mod pages;
pub mod policy;
pub mod route;
pub mod tunnel;
mod upstream;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header::HOST};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, service::service_fn, upgrade::OnUpgrade};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_core::{NodeHandle, PeerId, Scheme, admission::PeerKind};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken};
use tracing::{debug, info, warn};

pub use error::{Error, TunnelError};
pub use route::SERVICE_HEADER;

const X_DEVMESH_PROVIDER: HeaderName = HeaderName::from_static("x-devmesh-provider");
const X_DEVMESH_ROUTE: HeaderName = HeaderName::from_static("x-devmesh-route");
const X_DEVMESH_WARNING: HeaderName = HeaderName::from_static("x-devmesh-warning");
const X_DEVMESH_ATTEMPTS: HeaderName = HeaderName::from_static("x-devmesh-attempts");
/// Request header with a version requirement for this request: `^2.1`.
pub const REQUIRE_HEADER: HeaderName = HeaderName::from_static("x-devmesh-require");
/// Request header choosing the version mode of this request: `strict` or `warn`.
pub const VERSIONS_HEADER: HeaderName = HeaderName::from_static("x-devmesh-versions");
/// Largest request body kept so that the request can be sent again to
/// another provider when the first fails.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Body of the requests sent upstream: the client's body as it streams in,
/// or a kept copy when a request goes to a second provider.
pub type UpBody = Either<Incoming, Full<Bytes>>;

/// Body type of the responses of the front door: an upstream's body as it
/// comes, or a page of the proxy.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Buffer of each direction of a tunnel splice: large enough that bulk
/// transfers fill whole Noise frames.
const SPLICE_BUFFER: usize = 256 * 1024;
/// How long a tunnel waits for its peer's admission handshake to finish.
const ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// First byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Time a client has to finish its TLS handshake once it started it.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most tunnel streams served at once; more are dropped with a log line.
pub const MAX_TUNNEL_STREAMS: usize = 1024;

/// Response headers naming the provider of a response; a front-door
/// connection keeps the last ones it made, as its requests mostly go to the
/// same provider.
struct Stamp {
    provider: PeerId,
    service: String,
    version: semver::Version,
    provider_value: HeaderValue,
    service_value: Option<HeaderValue>,
}

/// What a front-door connection keeps between its requests.
struct Front {
    session: upstream::Session,
    /// The client's IP address as an `X-Forwarded-For` value.
    client_value: HeaderValue,
    local: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    proto: &'static str,
    stamp: Mutex<Option<Stamp>>,
    host_cache: Mutex<route::HostCache>,
}

/// The proxy: front door and tunnel server of one node.
pub struct Proxy {
    node: NodeHandle,
    routing: Arc<policy::Routing>,
    /// HTTP/1.1 and HTTP/2 serving of front-door connections.
    http: auto::Builder<TokioExecutor>,
    upstreams: Arc<upstream::Upstreams>,
    tunnel_streams: Arc<Semaphore>,
    /// Peer ids as header values (encoding them costs more than the rest of
    /// the header work of a request).
    peer_names: Mutex<HashMap<PeerId, HeaderValue>>,
    /// HTTPS on the front door's port, when enabled.
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        let namespace = node.snapshot().namespace.clone();
        let mut http = auto::Builder::new(TokioExecutor::new());
        // Uploads from HTTP/2 clients are not held to 64 KiB windows.
        http.http2().adaptive_window(true);
        Arc::new(Self {
            routing,
            http,
            upstreams: upstream::Upstreams::new(node.stream_control(), &namespace),
            node,
            tunnel_streams: Arc::new(Semaphore::new(MAX_TUNNEL_STREAMS)),
            peer_names: Mutex::new(HashMap::new()),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    fn peer_name(&self, peer: &PeerId) -> HeaderValue {
        let mut names = self.peer_names.lock().expect("peer names lock");
        if names.len() > 4096 {
            names.clear();
        }
        names
            .entry(*peer)
            .or_insert_with(|| {
                HeaderValue::from_str(&peer.to_string()).expect("peer ids are header-safe")
            })
            .clone()
    }

    /// The `X-DevMesh-Provider` and `X-DevMesh-Service` values of a response
    /// of `candidate`.
    fn stamp(
        &self,
        front: &Front,
        candidate: &choose::Candidate<'_>,
        service: &str,
    ) -> (HeaderValue, Option<HeaderValue>) {
        let mut stamp = front.stamp.lock().expect("stamp lock");
        if let Some(s) = stamp.as_ref()
            && s.provider == candidate.provider
            && s.service == service
            && s.version == *candidate.version
        {
            return (s.provider_value.clone(), s.service_value.clone());
        }
        let s = stamp.insert(Stamp {
            provider: candidate.provider,
            service: service.to_owned(),
            version: candidate.version.clone(),
            provider_value: self.peer_name(&candidate.provider),
            service_value: HeaderValue::from_str(&format!("{service}@{}", candidate.version)).ok(),
        });
        (s.provider_value.clone(), s.service_value.clone())
    }

    /// Serves the front door on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let local_addr = listener.local_addr()?;
        info!(addr = %local_addr, "proxy front door listening");
        loop {
            let (tcp, client) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(error = %e, "accepting a front-door connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                // HTTPS and plain HTTP share the port: a TLS handshake
                // starts with 0x16, an HTTP request with a letter.
                let mut first = [0u8; 1];
                match tcp.peek(&mut first).await {
                    Ok(1..) => {}
                    Ok(0) | Err(_) => return,
                }
                if first[0] != TLS_HANDSHAKE_RECORD {
                    return proxy
                        .serve_connection(tcp, client, local_addr, "http")
                        .await;
                }
                let Some(acceptor) = proxy.tls.clone() else {
                    warn!(%client, "a client started HTTPS, but this front door serves plain HTTP only");
                    return;
                };
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        proxy
                            .serve_connection(tls, client, local_addr, "https")
                            .await
                    }
                    Ok(Err(e)) => log_handshake_error(client, &e),
                    Err(_) => debug!(%client, "TLS handshake timed out"),
                }
            });
        }
    }

    /// Serves one front-door connection until it ends: HTTP/1.1 (upgrades
    /// such as WebSocket included) or HTTP/2, told apart by the HTTP/2
    /// connection preface (h2c with prior knowledge, or h2 after TLS ALPN).
    /// `client` is the peer's address, `local` the front door's, `proto`
    /// `http` or `https` (for `X-Forwarded-Proto`).
    pub async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        client: SocketAddr,
        local: SocketAddr,
        proto: &'static str,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let front = Arc::new(Front {
            session: upstream::Session::new(self.upstreams.clone()),
            client_value: forward::client_value(client.ip()),
            local,
            proto,
            stamp: Mutex::new(None),
            host_cache: Mutex::default(),
        });
        let proxy = self.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let proxy = proxy.clone();
            let front = front.clone();
            async move {
                if req.version() == http::Version::HTTP_2 {
                    forward::authority_to_host(&mut req);
                }
                Ok::<_, Infallible>(proxy.handle_front(req, &front).await)
            }
        });
        if let Err(e) = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await
        {
            debug!(%client, error = %e, "front-door connection ended with an error");
        }
    }

    /// Accepts tunnel streams from other nodes until `shutdown` is cancelled.
    pub async fn serve_tunnels(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        use futures::StreamExt as _;
        let mut incoming = self
            .node
            .stream_control()
            .accept(tunnel::HTTP_PROTOCOL)
            .map_err(|_| Error::AlreadyServing)?;
        loop {
            let (peer, stream) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = incoming.next() => match next {
                    Some(pair) => pair,
                    None => return Ok(()),
                },
            };
            let Ok(permit) = self.tunnel_streams.clone().try_acquire_owned() else {
                warn!(%peer, limit = MAX_TUNNEL_STREAMS, "too many tunnel streams; dropping a new one");
                continue;
            };
            let proxy = self.clone();
            tokio::spawn(async move {
                proxy.serve_tunnel(peer, stream).await;
                drop(permit);
            });
        }
    }

    /// Whether `peer` is an admitted member, waiting a little while its
    /// admission handshake is still running (a tunnel can arrive first).
    async fn wait_for_admission(&self, peer: PeerId) -> bool {
        let mut watch = self.node.watch();
        let check = |s: &mesh_core::Snapshot| match s.peers.get(&peer).map(|l| l.kind) {
            Some(PeerKind::Member) => Some(true),
            Some(PeerKind::Pending) => None,
            _ => Some(false),
        };
        let wait = async {
            loop {
                if let Some(ok) = check(&watch.borrow_and_update()) {
                    return ok;
                }
                if watch.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(ADMISSION_WAIT, wait)
            .await
            .unwrap_or(false)
    }

    async fn serve_tunnel(self: Arc<Self>, peer: PeerId, stream: libp2p::Stream) {
        let mut stream = stream.compat();
        let hello: tunnel::Hello =
            match tokio::time::timeout(tunnel::HANDSHAKE_TIMEOUT, tunnel::read_frame(&mut stream))
                .await
            {
                Ok(Ok(hello)) => hello,
                Ok(Err(e)) => {
                    warn!(%peer, error = %e, "dropping tunnel stream with a malformed header");
                    return;
                }
                Err(_) => {
                    warn!(%peer, "dropping tunnel stream: no header within the handshake timeout");
                    return;
                }
            };
        let admitted = self.wait_for_admission(peer).await;
        let snapshot = self.node.snapshot();
        let backend = if hello.v != tunnel::TUNNEL_VERSION {
            Err(format!(
                "tunnel version {} is not supported (this node speaks {})",
                hello.v,
                tunnel::TUNNEL_VERSION
            ))
        } else if !admitted {
            warn!(%peer, service = %hello.service, "refused a tunnel from a peer that is not an admitted member");
            Err(format!(
                "peer {peer} is not an admitted member of this node's namespace; join it with an invite from a member (`devmesh join <token>`)"
            ))
        } else if let Some(local) = snapshot.local.get(&hello.service) {
            if hello.h2 && !local.record.h2 {
                Err(format!(
                    "service {} on peer {} does not speak HTTP/2 (any more); its record will refresh within seconds",
                    hello.service, snapshot.local_peer
                ))
            } else {
                upstream::connect_loopback(local.port)
                    .await
                    .map(|tcp| (tcp, local.port, local.scheme))
                    .map_err(|e| {
                        format!(
                            "the backend of {} on port {} is unreachable: {e}",
                            hello.service, local.port
                        )
                    })
            }
        } else {
            Err(format!(
                "service {:?} is not provided by peer {} (it may have just stopped)",
                hello.service, snapshot.local_peer
            ))
        };
        // The TLS handshake with an https backend comes before the reply,
        // so that its failure is reported to the consumer.
        let backend = match backend {
            Ok((tcp, port, Scheme::Https)) => {
                let alpn = if hello.h2 {
                    backend::Alpn::H2
                } else {
                    backend::Alpn::Http1
                };
                match backend::tls(tcp, alpn).await {
                    Ok(tls) => Ok((tokio_util::either::Either::Right(tls), port, Scheme::Https)),
                    Err(e) => Err(format!(
                        "the backend of {} on port {}: {e}",
                        hello.service, port
                    )),
                }
            }
            Ok((tcp, port, scheme)) => Ok((tokio_util::either::Either::Left(tcp), port, scheme)),
            Err(e) => Err(e),
        };
        let reply = match &backend {
            Ok((_, port, scheme)) => tunnel::HelloReply {
                ok: true,
                error: None,
                host: Some(format!("localhost:{port}")),
                scheme: (*scheme == Scheme::Https).then_some(Scheme::Https),
            },
            Err(reason) => tunnel::HelloReply {
                ok: false,
                error: Some(reason.clone()),
                host: None,
                scheme: None,
            },
        };
        if let Err(e) = tunnel::write_frame(&mut stream, &reply).await {
            debug!(%peer, error = %e, "tunnel handshake failed");
            return;
        }
        let mut tcp = match backend {
            Ok((io, _, _)) => io,
            Err(reason) => {
                warn!(%peer, service = %hello.service, %reason, "refused a tunnel");
                return;
            }
        };
        // From here on the stream is the backend connection: HTTP/1.1 from
        // the consumer, upgrades included, or HTTP/2, passes through
        // untouched (through the TLS session of an https backend).
        match tokio::io::copy_bidirectional_with_sizes(
            &mut stream,
            &mut tcp,
            SPLICE_BUFFER,
            SPLICE_BUFFER,
        )
        .await
        {
            Ok((up, down)) => debug!(%peer, service = %hello.service, up, down, "tunnel closed"),
            Err(e) => {
                debug!(%peer, service = %hello.service, error = %e, "tunnel ended with an error")
            }
        }
    }

    /// A request arriving at the front door.
    async fn handle_front(&self, mut req: Request<Incoming>, front: &Front) -> Response<Body> {
        let snapshot = self.node.snapshot();
        let json = pages::wants_json(req.headers());
        let routed = route::target_cached(
            req.uri(),
            req.headers(),
            &mut front.host_cache.lock().expect("host cache lock"),
        );
        let service = match routed {
            route::Target::Explicit(name) => name,
            route::Target::Service(name) => {
                match route::by_path(&snapshot, req.uri().path(), Some(&name)) {
                    Some(claimed) => claimed.to_owned(),
                    None => name,
                }
            }
            route::Target::Unnamed => match route::by_path(&snapshot, req.uri().path(), None) {
                Some(claimed) => claimed.to_owned(),
                None => {
                    let host = match req.headers().get(HOST).and_then(|h| h.to_str().ok()) {
                        Some(host) => host.to_owned(),
                        None => front.local.to_string(),
                    };
                    return pages::unnamed(&snapshot, &host, json);
                }
            },
        };
        let table = self.routing.table();
        let settings = table.service(&service);
        let ask = match self.ask(&snapshot, &service, req.headers(), &table) {
            Ok(ask) => ask,
            Err(message) => return pages::bad_request(&message, json),
        };
        let sticky = settings.is_some_and(|s| s.sticky);
        let cookie = sticky
            .then(|| sticky_cookie(req.headers(), &service))
            .flatten();
        let requirements = &ask.requirements;
        let choice = match choose::choose(
            &snapshot,
            &service,
            &choose::Ask {
                requirements,
                mode: ask.mode,
                pin: settings.and_then(|s| s.pin),
                sticky: cookie,
            },
            &self.routing,
            std::time::Instant::now(),
        ) {
            Ok(choice) => choice,
            Err(refusal) => {
                debug!(%service, ?refusal, "no route");
                return pages::refused(&snapshot, &service, requirements, refusal, json);
            }
        };
        let warning = choice.unmet.then(|| {
            let best = &choice.candidates[0];
            let requirement = choose::requirements_text(requirements);
            let text = format!(
                "no provider of {service} satisfies {requirement}; served by {service}@{} on {}",
                best.version, best.provider
            );
            warn!(%service, %requirement, version = %best.version, provider = %best.provider, "no provider satisfies the version requirement; using the best available");
            text
        });
        let retry = settings
            .and_then(|s| s.retry)
            .unwrap_or(table.defaults.retry)
            .allows(req.method());
        let upgrade = forward::upgrade_protocol(req.headers());
        let upgrading = upgrade.is_some();
        let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut out = Request::new(Either::Left(body));
        *out.method_mut() = parts.method;
        *out.uri_mut() = origin_form(parts.uri);
        *out.headers_mut() = parts.headers;
        let headers = out.headers_mut();
        // Room for the X-Forwarded-* headers at once.
        headers.reserve(3);
        forward::strip_hop_by_hop(headers, upgrade);
        forward::add_forwarded(headers, &front.client_value, front.proto);
        headers.remove(route::SERVICE_HEADER_NAME);
        if ask.from_header {
            headers.remove(REQUIRE_HEADER);
        }
        headers.remove(VERSIONS_HEADER);
        // A request that may go to a second provider keeps what it needs to
        // be sent again: its head, and its body when that is small.
        let replay = if retry && choice.candidates.len() > 1 {
            match Replay::keep(&mut out).await {
                Ok(replay) => replay,
                Err(e) => {
                    return pages::bad_request(&format!("reading the request body: {e}"), json);
                }
            }
        } else {
            None
        };
        let mut service_key: Option<Arc<str>> = None;
        let mut last_error = None;
        let now = std::time::Instant::now();
        for (attempt, candidate) in choice.candidates.iter().enumerate() {
            // The upstream connection sets the `Host` its backend expects.
            let key = match candidate.target {
                choose::Target::Local { port, scheme, h2 } => upstream::Key::Local {
                    port,
                    scheme,
                    proto: upstream_proto(h2, upgrading),
                },
                choose::Target::Remote { peer, h2, .. } => upstream::Key::Remote {
                    peer,
                    service: service_key
                        .get_or_insert_with(|| service.as_str().into())
                        .clone(),
                    proto: upstream_proto(h2, upgrading),
                },
            };
            match front.session.send(key, out).await {
                Ok(resp) => {
                    self.routing.succeeded(&service, &candidate.provider);
                    let mut resp = finish_response(resp, on_upgrade);
                    let (provider, service_value) = self.stamp(front, candidate, &service);
                    let h = resp.headers_mut();
                    h.insert(X_DEVMESH_PROVIDER, provider);
                    h.insert(
                        X_DEVMESH_ROUTE,
                        HeaderValue::from_static(candidate.target.route()),
                    );
                    if let Some(v) = service_value {
                        h.insert(route::SERVICE_HEADER_NAME, v);
                    }
                    if attempt > 0 {
                        h.insert(X_DEVMESH_ATTEMPTS, HeaderValue::from(attempt + 1));
                    }
                    if let Some(w) = &warning
                        && let Ok(v) = HeaderValue::from_str(w)
                    {
                        h.insert(X_DEVMESH_WARNING, v);
                    }
                    if sticky && cookie != Some(candidate.provider) {
                        let value = format!(
                            "devmesh-{service}={}; Path=/; HttpOnly; SameSite=Lax",
                            candidate.provider
                        );
                        if let Ok(v) = HeaderValue::from_str(&value) {
                            h.append(http::header::SET_COOKIE, v);
                        }
                    }
                    return resp;
                }
                Err(upstream::SendError { error, request }) => {
                    let reason = error_chain(&error);
                    let backoff = self.routing.failed(&service, candidate.provider, now);
                    warn!(%service, provider = %candidate.provider, route = candidate.target.route(), error = %reason, ejected_for = ?backoff, "forwarding failed");
                    last_error = Some((candidate, reason));
                    // A request that was not sent at all, or one kept for
                    // sending again, goes to the next provider.
                    match (request, &replay) {
                        (Some(unsent), _) => out = unsent,
                        (None, Some(replay)) => out = replay.request(),
                        (None, None) => break,
                    }
                }
            }
        }
        let (candidate, reason) = last_error.expect("at least one attempt");
        pages::bad_gateway(
            &service,
            &candidate.provider.to_string(),
            candidate.target.route(),
            &reason,
            json,
        )
    }

    /// The version requirements and mode of a request for `service`: the
    /// request's own `X-DevMesh-Require` replaces the node's requirements
    /// (from `devmesh route` and the `requires` of this node's services).
    fn ask(
        &self,
        snapshot: &mesh_core::Snapshot,
        service: &str,
        headers: &http::HeaderMap,
        table: &policy::Table,
    ) -> Result<Asked, String> {
        let settings = table.service(service);
        let mut requirements = Vec::new();
        let mut from_header = false;
        if let Some(value) = headers.get(REQUIRE_HEADER) {
            let text = value.to_str().unwrap_or_default().trim();
            let req = semver::VersionReq::parse(text).map_err(|e| {
                format!(
                    "X-DevMesh-Require: {text:?} is not a version requirement ({e}); write it like \"^2.1\" or \">=1.4, <2\""
                )
            })?;
            requirements.push(choose::Requirement {
                req,
                source: "X-DevMesh-Require".into(),
            });
            from_header = true;
        } else {
            requirements = choose::node_requirements(snapshot, service, settings);
        }
        let mode = match headers.get(VERSIONS_HEADER) {
            Some(value) => value
                .to_str()
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|e| format!("X-DevMesh-Versions: {e}"))?,
            None => settings
                .and_then(|s| s.versions)
                .unwrap_or(table.defaults.versions),
        };
        Ok(Asked {
            requirements,
            mode,
            from_header,
        })
    }
}

/// The version side of a request.
struct Asked {
    requirements: Vec<choose::Requirement>,
    mode: policy::VersionMode,
    from_header: bool,
}

/// The provider the client's `devmesh-<service>` cookie names.
fn sticky_cookie(headers: &http::HeaderMap, service: &str) -> Option<PeerId> {
    let name = format!("devmesh-{service}");
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// What a request needs to be sent again.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps a copy of `request`, reading its body when it is at most
    /// [`MAX_REPLAY_BODY`] bytes (the request then carries the copy). A
    /// request with a larger or unknown-length body cannot be sent twice:
    /// `None`.
    async fn keep(request: &mut Request<UpBody>) -> Result<Option<Self>, hyper::Error> {
        use http_body_util::BodyExt as _;
        use hyper::body::Body as _;
        let body = match request.body() {
            Either::Left(incoming) if incoming.is_end_stream() => Bytes::new(),
            Either::Left(incoming) => {
                let small = incoming
                    .size_hint()
                    .exact()
                    .is_some_and(|n| n <= MAX_REPLAY_BODY);
                if !small {
                    return Ok(None);
                }
                let body = std::mem::replace(request.body_mut(), Either::Right(Full::default()));
                let Either::Left(incoming) = body else {
                    unreachable!("checked above")
                };
                let bytes = incoming.collect().await?.to_bytes();
                *request.body_mut() = Either::Right(Full::new(bytes.clone()));
                bytes
            }
            Either::Right(_) => return Ok(None),
        };
        Ok(Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body,
        }))
    }

    fn request(&self) -> Request<UpBody> {
        let mut r = Request::new(Either::Right(Full::new(self.body.clone())));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// Logs why a TLS handshake at the front door failed, with a hint when the
/// client does not trust the node's CA.
fn log_handshake_error(client: SocketAddr, e: &std::io::Error) {
    use tokio_rustls::rustls::{AlertDescription, Error as TlsError};
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        Some(TlsError::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown),
        )) => warn!(
            %client,
            ?alert,
            "a client refused the front door's certificate: it does not trust this node's CA yet; `devmesh cert install` shows how"
        ),
        // The certificate resolver has logged why it refused.
        _ => debug!(%client, error = %e, "TLS handshake failed"),
    }
}

/// The HTTP version to speak to a backend: HTTP/2 when it speaks it, except
/// for upgrades (WebSocket), which only HTTP/1.1 carries to a backend.
fn upstream_proto(h2: bool, upgrading: bool) -> upstream::Proto {
    if h2 && !upgrading {
        upstream::Proto::H2
    } else {
        upstream::Proto::H1
    }
}

/// The path and query of a request, as the upstream gets it.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return uri;
    }
    uri.path_and_query()
        .and_then(|pq| pq.as_str().parse().ok())
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// Prepares a backend response for the client: hop-by-hop headers go,
/// except on a protocol switch, whose two upgraded ends are spliced.
fn finish_response(mut resp: Response<Incoming>, downstream: Option<OnUpgrade>) -> Response<Body> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = downstream {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        let mut down = TokioIo::new(down);
                        let mut up = TokioIo::new(up);
                        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                            debug!(error = %e, "upgraded connection ended with an error");
                        }
                    }
                    Err(e) => debug!(error = %e, "upgrade failed"),
                }
            });
        }
        return resp.map(Either::Left);
    }
    forward::strip_hop_by_hop(resp.headers_mut(), None);
    // The client's connection has its own HTTP version; hyper picks it.
    *resp.version_mut() = http::Version::HTTP_11;
    resp.map(Either::Left)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
