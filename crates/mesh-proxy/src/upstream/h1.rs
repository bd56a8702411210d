//! HTTP/1.1 upstream connections: made, kept idle for the next session,
//! and the send of a [`Session`].

use http::{HeaderValue, Request, Response, Version, header::HOST};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{Key, SendError, Session, Upstreams, local};
use crate::{backend::Alpn, error::UpstreamError, forward};

/// Most idle upstream connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 64;

/// An upstream HTTP/1.1 connection.
pub(super) struct Conn {
    sender: SendRequest<crate::body::UpBody>,
    /// The `Host` the backend expects, when the connection says.
    host: Option<HeaderValue>,
}

impl Upstreams {
    pub(super) fn take_idle(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle lock");
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put_idle(&self, key: Key, conn: Conn) {
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

    /// Makes a new HTTP/1.1 connection to `key`.
    async fn connect_h1(&self, key: &Key) -> Result<Conn, UpstreamError> {
        match key {
            Key::Local { port, scheme, .. } => {
                let io = local::connect(*port, *scheme, Alpn::Http1).await?;
                Ok(Conn {
                    sender: handshake(TokioIo::new(io)).await?,
                    host: Some(forward::backend_host(*port)),
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
}

async fn handshake<T>(io: T) -> Result<SendRequest<crate::body::UpBody>, UpstreamError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|source| UpstreamError::Handshake { source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl Session {
    /// Sends `request` to the HTTP/1.1 upstream `key`, on the connection
    /// this session used last when it goes to the same upstream, else on an
    /// idle or new one.
    pub(super) async fn send_h1(
        &self,
        key: Key,
        request: Request<crate::body::UpBody>,
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
                match self.upstreams.connect_h1(&key).await {
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
                        self.keep(key, conn);
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

    /// Keeps `conn` as this session's connection for its next request.
    fn keep(&self, key: Key, conn: Conn) {
        // An HTTP/2 downstream sends requests concurrently: a connection
        // another one left here goes idle.
        let other = self
            .current
            .lock()
            .expect("session lock")
            .replace((key, conn));
        if let Some((k, c)) = other {
            self.upstreams.put_idle(k, c);
        }
    }
}
