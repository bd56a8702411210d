//! Connections to upstreams: local backends over TCP and remote providers
//! over tunnel streams, both speaking HTTP/1.1.
//!
//! A downstream HTTP/1.1 connection sends one request at a time, so each
//! downstream connection (a [`Session`]) keeps the upstream connection it
//! used last and sends its next request there, with no pool lookup per
//! request. When the downstream connection ends, its upstream connection
//! goes back to a shared idle list for the next session.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderValue, Request, Response, header::HOST};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use libp2p::PeerId;
use tokio::net::TcpStream;
use tracing::debug;

use crate::{TunnelError, tunnel};

/// Most idle upstream connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 64;
/// Times a tunnel stream is opened before the provider counts as unreachable.
const OPEN_ATTEMPTS: u64 = 4;
/// Time allowed to connect to a local backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A backend on a local port.
    Local(u16),
    /// A service of a remote provider node.
    Remote(PeerId, Arc<str>),
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

/// Idle upstream connections shared by all sessions, and how to make new ones.
pub struct Upstreams {
    idle: Mutex<HashMap<Key, Vec<Conn>>>,
    control: libp2p_stream::Control,
    namespace: Arc<str>,
}

impl Upstreams {
    pub fn new(control: libp2p_stream::Control, namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(HashMap::new()),
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
            Key::Local(port) => {
                let tcp = connect_loopback(*port).await?;
                let sender = handshake(TokioIo::new(tcp)).await?;
                Ok(Conn {
                    sender,
                    host: Some(crate::forward::backend_host(*port)),
                })
            }
            Key::Remote(peer, service) => {
                // The provider's libp2p-stream inbound queue holds one stream:
                // when many open at once, some are dropped; open those again.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match tunnel::open(self.control.clone(), *peer, &self.namespace, service).await
                    {
                        Ok((io, host)) => {
                            let sender = handshake(io).await?;
                            let host = host.and_then(|h| HeaderValue::from_str(&h).ok());
                            return Ok(Conn { sender, host });
                        }
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
        }
    }
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
            match conn.sender.try_send_request(request).await {
                Ok(response) => {
                    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        *self.current.lock().expect("session lock") = Some((key, conn));
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
