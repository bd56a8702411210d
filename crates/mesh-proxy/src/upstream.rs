//! Connections to upstreams: local backends over TCP (or TLS) and remote
//! providers over tunnel streams, speaking HTTP/1.1 or HTTP/2.
//!
//! HTTP/1.1: a downstream HTTP/1.1 connection sends one request at a time,
//! so each downstream connection (a [`Session`]) keeps the upstream
//! connection it used last and sends its next request there, with no pool
//! lookup per request. When the downstream connection ends, its upstream
//! connection goes back to a shared idle list for the next session.
//!
//! HTTP/2 (services announced with `h2`): one upstream connection per
//! upstream, shared by every session, multiplexes all requests; it is made
//! on first use and again when it closes.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderValue, Request, Response, Uri, Version, header::HOST, uri::Authority};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use libp2p::PeerId;
use mesh_core::Scheme;
use tokio::net::TcpStream;
use tracing::debug;

use crate::{
    TunnelError,
    backend::{self, Alpn},
    tunnel,
};

/// Most idle upstream connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 64;
/// Times a tunnel stream is opened before the provider counts as unreachable.
const OPEN_ATTEMPTS: u64 = 4;
/// Time allowed to connect to a local backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pings on an idle HTTP/2 upstream connection, to find a dead one before a
/// request does.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// HTTP/1.1, upgrades included.
    H1,
    /// HTTP/2 with prior knowledge (or ALPN `h2` over TLS).
    H2,
}

/// An upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A backend on a local port.
    Local {
        port: u16,
        scheme: Scheme,
        proto: Proto,
    },
    /// A service of a remote provider node.
    Remote {
        peer: PeerId,
        service: Arc<str>,
        proto: Proto,
    },
}

impl Key {
    fn proto(&self) -> Proto {
        match self {
            Key::Local { proto, .. } | Key::Remote { proto, .. } => *proto,
        }
    }
}

/// An upstream HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<crate::UpBody>,
    /// The `Host` the backend expects, when the connection says.
    host: Option<HeaderValue>,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made; nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// The connection failed during the exchange.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// A failed send; `request` is returned when nothing of it was sent, so it
/// can go to another upstream.
pub struct SendError {
    pub error: UpstreamError,
    pub request: Option<Request<crate::UpBody>>,
}

/// A shared upstream HTTP/2 connection.
#[derive(Clone)]
struct H2Conn {
    /// Tells connections apart (a new one replaces a stale one only once).
    id: u64,
    sender: hyper::client::conn::http2::SendRequest<crate::UpBody>,
    /// `:scheme` and `:authority` of its requests.
    scheme: Scheme,
    authority: Option<Authority>,
}

static NEXT_H2_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The HTTP/2 connection of one upstream, made by one request at a time.
type H2Slot = Arc<tokio::sync::Mutex<Option<H2Conn>>>;

/// Idle upstream connections shared by all sessions, and how to make new ones.
pub struct Upstreams {
    idle: Mutex<HashMap<Key, Vec<Conn>>>,
    h2: Mutex<HashMap<Key, H2Slot>>,
    control: libp2p_stream::Control,
    namespace: Arc<str>,
}

impl Upstreams {
    pub fn new(control: libp2p_stream::Control, namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            control,
            namespace: namespace.into(),
        })
    }

    fn take_idle(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle lock");
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, key: Key, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("idle lock");
        let list = idle.entry(key).or_default();
        list.retain(|c| !c.sender.is_closed());
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(conn);
        }
    }

    async fn connect(&self, key: &Key) -> Result<Conn, UpstreamError> {
        match key {
            Key::Local { port, scheme, .. } => {
                let tcp = connect_loopback(*port).await?;
                let sender = match scheme {
                    Scheme::Http => handshake(TokioIo::new(tcp)).await?,
                    Scheme::Https => {
                        handshake(TokioIo::new(backend::tls(tcp, Alpn::Http1).await?)).await?
                    }
                };
                Ok(Conn {
                    sender,
                    host: Some(crate::forward::backend_host(*port)),
                })
            }
            Key::Remote { peer, service, .. } => {
                let (io, accepted) = self.open_tunnel(*peer, service, false).await?;
                let sender = handshake(io).await?;
                let host = accepted.host.and_then(|h| HeaderValue::from_str(&h).ok());
                Ok(Conn { sender, host })
            }
        }
    }

    async fn open_tunnel(
        &self,
        peer: PeerId,
        service: &str,
        h2: bool,
    ) -> Result<(tunnel::TunnelIo, tunnel::Accepted), UpstreamError> {
        // The provider's libp2p-stream inbound queue holds one stream:
        // when many open at once, some are dropped; open those again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match tunnel::open(self.control.clone(), peer, &self.namespace, service, h2).await {
                Ok(opened) => return Ok(opened),
                Err(e @ TunnelError::Refused { .. }) => {
                    return Err(UpstreamError::Connect(e.to_string()));
                }
                Err(e) if attempt >= OPEN_ATTEMPTS => {
                    return Err(UpstreamError::Connect(e.to_string()));
                }
                Err(e) => {
                    debug!(%peer, attempt, error = %e, "opening a tunnel failed; trying again");
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                }
            }
        }
    }

    /// Makes the HTTP/2 connection of `key`.
    async fn connect_h2(&self, key: &Key) -> Result<H2Conn, UpstreamError> {
        match key {
            Key::Local { port, scheme, .. } => {
                let tcp = connect_loopback(*port).await?;
                let sender = match scheme {
                    Scheme::Http => handshake_h2(TokioIo::new(tcp)).await?,
                    Scheme::Https => {
                        handshake_h2(TokioIo::new(backend::tls(tcp, Alpn::H2).await?)).await?
                    }
                };
                Ok(H2Conn {
                    id: 0,
                    sender,
                    scheme: *scheme,
                    authority: format!("localhost:{port}").parse().ok(),
                })
            }
            Key::Remote { peer, service, .. } => {
                let (io, accepted) = self.open_tunnel(*peer, service, true).await?;
                let sender = handshake_h2(io).await?;
                Ok(H2Conn {
                    id: 0,
                    sender,
                    scheme: accepted.scheme,
                    authority: accepted.host.and_then(|h| h.parse().ok()),
                })
            }
        }
    }

    /// The shared HTTP/2 connection of `key`: the open one, or a new one
    /// when there is none, it closed, or `stale` is that connection.
    async fn h2_conn(&self, key: &Key, stale: Option<&H2Conn>) -> Result<H2Conn, UpstreamError> {
        let slot = self
            .h2
            .lock()
            .expect("h2 lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.sender.is_closed()
            && stale.is_none_or(|s| s.id != conn.id)
        {
            return Ok(conn.clone());
        }
        *slot = None;
        let mut conn = self.connect_h2(key).await?;
        conn.id = NEXT_H2_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(?key, "new HTTP/2 upstream connection");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `request` on the shared HTTP/2 connection of `key`.
    async fn send_h2(
        &self,
        key: &Key,
        mut request: Request<crate::UpBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut stale = None;
        // A connection that closed under the request gets it back unsent;
        // then it goes once more on a new connection.
        loop {
            let mut conn = match self.h2_conn(key, stale.as_ref()).await {
                Ok(c) => c,
                Err(error) => {
                    return Err(SendError {
                        error,
                        request: Some(request),
                    });
                }
            };
            to_h2(&mut request, &conn);
            match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if stale.is_none() => {
                        debug!(
                            ?key,
                            "HTTP/2 upstream connection closed; retrying on a new one"
                        );
                        request = unsent;
                        stale = Some(conn);
                    }
                    unsent => {
                        return Err(SendError {
                            error: UpstreamError::Http(e.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
    }
}

/// Makes an HTTP/1.1-shaped request (origin-form URI, `Host` header) an
/// HTTP/2 request to `conn`: the authority and scheme go into the URI, from
/// which hyper sends `:authority` and `:scheme`.
fn to_h2(request: &mut Request<crate::UpBody>, conn: &H2Conn) {
    *request.version_mut() = Version::HTTP_2;
    let host = request.headers_mut().remove(HOST);
    let authority = conn
        .authority
        .clone()
        .or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()));
    let Some(authority) = authority else {
        return;
    };
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(match conn.scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    });
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
}

/// Connects to a local backend on 127.0.0.1, then on ::1 (dev servers that
/// bind `localhost` often listen on only one of them).
pub async fn connect_loopback(port: u16) -> Result<TcpStream, UpstreamError> {
    let mut errors = Vec::new();
    for ip in [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()] {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: timed out after {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(UpstreamError::Connect(errors.join("; ")))
}

async fn handshake<T>(io: T) -> Result<SendRequest<crate::UpBody>, UpstreamError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn handshake_h2<T>(
    io: T,
) -> Result<hyper::client::conn::http2::SendRequest<crate::UpBody>, UpstreamError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect(format!("HTTP/2 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The upstream side of one downstream connection.
pub struct Session {
    upstreams: Arc<Upstreams>,
    current: Mutex<Option<(Key, Conn)>>,
}

impl Session {
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        Self {
            upstreams,
            current: Mutex::new(None),
        }
    }

    /// Sends `request` to `key`, on the connection this session used last
    /// when it goes to the same upstream, else on an idle or new one.
    pub async fn send(
        &self,
        key: Key,
        request: Request<crate::UpBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if key.proto() == Proto::H2 {
            return self.upstreams.send_h2(&key, request).await;
        }
        let last = self.current.lock().expect("session lock").take();
        let reused = match last {
            Some((k, c)) if k == key => Some(c),
            Some((k, c)) => {
                self.upstreams.put_idle(k, c);
                None
            }
            None => None,
        };
        let mut request = request;
        // A reused connection may have been closed by the other side; then
        // the request comes back unsent and goes on a new connection.
        for mut conn in [reused.or_else(|| self.upstreams.take_idle(&key)), None] {
            let fresh = conn.is_none();
            let ready = match conn.as_mut() {
                Some(c) => c.sender.ready().await.is_ok(),
                None => false,
            };
            let mut conn = if ready {
                conn.expect("ready connection")
            } else {
                match self.upstreams.connect(&key).await {
                    Ok(c) => c,
                    Err(error) => {
                        return Err(SendError {
                            error,
                            request: Some(request),
                        });
                    }
                }
            };
            if let Some(host) = &conn.host {
                request.headers_mut().insert(HOST, host.clone());
            }
            // A request that came in as HTTP/2 goes out as HTTP/1.1.
            *request.version_mut() = Version::HTTP_11;
            match conn.sender.try_send_request(request).await {
                Ok(response) => {
                    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        // An HTTP/2 downstream sends requests concurrently:
                        // a connection another one left here goes idle.
                        let other = self
                            .current
                            .lock()
                            .expect("session lock")
                            .replace((key, conn));
                        if let Some((k, c)) = other {
                            self.upstreams.put_idle(k, c);
                        }
                    }
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh && ready => {
                        debug!(
                            ?key,
                            "idle upstream connection was closed; retrying on a new one"
                        );
                        request = unsent;
                    }
                    unsent => {
                        return Err(SendError {
                            error: UpstreamError::Http(e.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
        unreachable!("the second attempt always returns")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((key, conn)) = self.current.get_mut().ok().and_then(Option::take) {
            self.upstreams.put_idle(key, conn);
        }
    }
}
