//! The devmesh proxy: the HTTP front door on a loopback port, routing to
//! local backends or through `/devmesh/http/1` tunnels to other nodes, and the
//! provider side that serves tunnels from other nodes.
//!
//! ```no_run
//! # async fn demo(node: mesh_core::NodeHandle) -> Result<(), mesh_proxy::Error> {
//! let proxy = mesh_proxy::Proxy::new(node);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(proxy.clone().serve_tunnels(shutdown.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! proxy.serve(listener, shutdown).await?;
//! # Ok(()) }
//! ```

mod error;
pub mod forward;
mod pages;
pub mod route;
pub mod tunnel;

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header::HOST};
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, upgrade::OnUpgrade};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::{TokioExecutor, TokioIo},
};
use mesh_core::{NodeHandle, PeerId, Provider, Snapshot};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken};
use tracing::{debug, info, warn};

pub use error::{Error, TunnelError};
pub use route::SERVICE_HEADER;

/// Body type of everything the proxy sends.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Most tunnel streams served at once; more are dropped with a log line.
pub const MAX_TUNNEL_STREAMS: usize = 1024;

type LocalClient = Client<HttpConnector<LoopbackResolver>, Body>;
type RemoteClient = Client<tunnel::TunnelConnector, Body>;

/// Resolves every backend name to the loopback addresses, IPv4 first.
#[derive(Clone, Copy, Debug)]
pub struct LoopbackResolver;

impl tower_service::Service<Name> for LoopbackResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
        ]
        .into_iter()))
    }
}

/// Where a request goes.
#[derive(Debug, Clone)]
enum Target {
    Local { port: u16 },
    Remote { peer: PeerId, direct: bool },
}

impl Target {
    fn route(&self) -> &'static str {
        match self {
            Target::Local { .. } => "local",
            Target::Remote { direct: true, .. } => "remote-direct",
            Target::Remote { direct: false, .. } => "remote-relayed",
        }
    }
}

/// A candidate provider of a request.
struct Candidate {
    target: Target,
    provider: PeerId,
    version: String,
}

/// Orders the providers of `service`: local first, then connected peers
/// (direct before relayed, lower RTT first), then peers not connected now.
fn candidates(snapshot: &Snapshot, service: &str) -> Vec<Candidate> {
    let mut remote = Vec::new();
    let mut out = Vec::new();
    for p in snapshot.providers(service) {
        match p {
            Provider::Local(l) => out.push(Candidate {
                target: Target::Local { port: l.port },
                provider: snapshot.local_peer,
                version: l.record.version.to_string(),
            }),
            Provider::Remote(r) => {
                let link = snapshot.peers.get(&r.peer);
                let rank = (
                    link.is_none(),
                    !link.is_some_and(|l| l.direct),
                    link.and_then(|l| l.rtt).unwrap_or(Duration::MAX),
                );
                remote.push((
                    rank,
                    Candidate {
                        target: Target::Remote {
                            peer: r.peer,
                            direct: link.is_none_or(|l| l.direct),
                        },
                        provider: r.peer,
                        version: r.record.version.to_string(),
                    },
                ));
            }
        }
    }
    remote.sort_by_key(|(rank, _)| *rank);
    out.extend(remote.into_iter().map(|(_, c)| c));
    out
}

/// The proxy: front door and tunnel server of one node.
pub struct Proxy {
    node: NodeHandle,
    local: LocalClient,
    remote: RemoteClient,
    tunnel_streams: Arc<Semaphore>,
}

impl Proxy {
    /// A proxy for `node`.
    pub fn new(node: NodeHandle) -> Arc<Self> {
        let mut http = HttpConnector::new_with_resolver(LoopbackResolver);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let local = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(http);
        let namespace = node.snapshot().namespace.clone();
        let remote = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(tunnel::TunnelConnector::new(
                node.stream_control(),
                &namespace,
            ));
        Arc::new(Self {
            node,
            local,
            remote,
            tunnel_streams: Arc::new(Semaphore::new(MAX_TUNNEL_STREAMS)),
        })
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
                let service = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle_front(req, client, local_addr).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await
                {
                    debug!(%client, error = %e, "front-door connection ended with an error");
                }
            });
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
        let namespace = self.node.snapshot().namespace.clone();
        let refusal = if hello.v != tunnel::TUNNEL_VERSION {
            Some(format!(
                "tunnel version {} is not supported (this node speaks {})",
                hello.v,
                tunnel::TUNNEL_VERSION
            ))
        } else if hello.namespace != namespace {
            Some(format!(
                "this node is not in namespace {:?}",
                hello.namespace
            ))
        } else {
            None
        };
        let reply = tunnel::HelloReply {
            ok: refusal.is_none(),
            error: refusal.clone(),
        };
        if let Err(e) = tunnel::write_frame(&mut stream, &reply).await {
            debug!(%peer, error = %e, "tunnel handshake failed");
            return;
        }
        if let Some(reason) = refusal {
            warn!(%peer, %reason, "refused a tunnel");
            return;
        }
        let service = service_fn(move |req| {
            let proxy = self.clone();
            async move { Ok::<_, Infallible>(proxy.handle_tunneled(req, peer).await) }
        });
        if let Err(e) = http1::Builder::new()
            .serve_connection(tunnel::TunnelIo::new(stream), service)
            .with_upgrades()
            .await
        {
            debug!(%peer, error = %e, "tunnel stream ended with an error");
        }
    }

    /// A request arriving at the front door.
    async fn handle_front(
        &self,
        mut req: Request<Incoming>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Response<Body> {
        let snapshot = self.node.snapshot();
        let json = pages::wants_json(req.headers());
        let service = match route::target(req.uri(), req.headers()) {
            route::Target::Service(name) => name,
            route::Target::Unnamed => {
                let host = req
                    .headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned);
                return pages::unnamed(
                    &snapshot,
                    Some(host.as_deref().unwrap_or(&local.to_string())),
                    json,
                );
            }
        };
        let candidates = candidates(&snapshot, &service);
        if candidates.is_empty() {
            debug!(%service, "no provider");
            return pages::no_provider(&snapshot, &service, json);
        }
        let upgrade = forward::upgrade_protocol(req.headers());
        let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        forward::strip_hop_by_hop(&mut headers, upgrade);
        forward::add_forwarded(&mut headers, client.ip());
        headers.remove(SERVICE_HEADER);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // A request without a body can be sent again to the next provider.
        let retryable = hyper::body::Body::is_end_stream(&body) && on_upgrade.is_none();
        let mut body = Some(body.boxed_unsync());
        let mut last_error = None;
        for (i, candidate) in candidates.iter().enumerate() {
            let body = match body.take() {
                Some(b) => b,
                None if retryable => empty(),
                None => break,
            };
            let mut out = Request::new(body);
            *out.method_mut() = parts.method.clone();
            *out.headers_mut() = headers.clone();
            let result = match candidate.target {
                Target::Local { port } => {
                    *out.uri_mut() = backend_uri(&format!("localhost:{port}"), &path);
                    forward::rewrite_host_for_backend(out.headers_mut(), port);
                    self.local.request(out).await
                }
                Target::Remote { peer, .. } => {
                    *out.uri_mut() = backend_uri(&peer.to_string(), &path);
                    out.headers_mut().insert(
                        SERVICE_HEADER,
                        HeaderValue::from_str(&service).expect("validated name"),
                    );
                    self.remote.request(out).await
                }
            };
            match result {
                Ok(resp) => {
                    let mut resp = finish_response(resp, on_upgrade);
                    let h = resp.headers_mut();
                    if let Ok(v) = HeaderValue::from_str(&candidate.provider.to_string()) {
                        h.insert("x-devmesh-provider", v);
                    }
                    h.insert(
                        "x-devmesh-route",
                        HeaderValue::from_static(candidate.target.route()),
                    );
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("{service}@{}", candidate.version))
                    {
                        h.insert("x-devmesh-service", v);
                    }
                    return resp;
                }
                Err(e) => {
                    let reason = error_chain(&e);
                    warn!(%service, provider = %candidate.provider, route = candidate.target.route(), error = %reason, attempt = i + 1, "forwarding failed");
                    last_error = Some((candidate, reason));
                    if !(retryable && e.is_connect()) {
                        break;
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

    /// A request that came through a tunnel from `peer`, for a local service.
    async fn handle_tunneled(&self, mut req: Request<Incoming>, peer: PeerId) -> Response<Body> {
        let snapshot = self.node.snapshot();
        let Some(service) = req
            .headers()
            .get(SERVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            warn!(%peer, "dropping a tunneled request without an x-devmesh-service header");
            return pages::bad_tunnel_request("missing x-devmesh-service header");
        };
        let Some(local) = snapshot.local.get(&service) else {
            debug!(%peer, %service, "tunneled request for a service not provided here");
            return pages::not_provided_here(&snapshot, &service);
        };
        let port = local.port;
        let upgrade = forward::upgrade_protocol(req.headers());
        let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut out = Request::new(body.boxed_unsync());
        *out.method_mut() = parts.method;
        *out.headers_mut() = parts.headers;
        forward::strip_hop_by_hop(out.headers_mut(), upgrade);
        out.headers_mut().remove(SERVICE_HEADER);
        forward::rewrite_host_for_backend(out.headers_mut(), port);
        *out.uri_mut() = backend_uri(
            &format!("localhost:{port}"),
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        );
        match self.local.request(out).await {
            Ok(resp) => finish_response(resp, on_upgrade),
            Err(e) => {
                let reason = error_chain(&e);
                warn!(%peer, %service, port, error = %reason, "local backend unreachable for a tunneled request");
                pages::bad_gateway(
                    &service,
                    &snapshot.local_peer.to_string(),
                    "local",
                    &reason,
                    false,
                )
            }
        }
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn backend_uri(authority: &str, path: &str) -> Uri {
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://invalid/"))
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
        return resp.map(|b| b.boxed_unsync());
    }
    forward::strip_hop_by_hop(resp.headers_mut(), None);
    // The client's connection has its own HTTP version; hyper picks it.
    *resp.version_mut() = http::Version::HTTP_11;
    resp.map(|b| b.boxed_unsync())
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
