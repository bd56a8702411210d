//! HTTP/2 upstream connections: one per upstream, shared by every session,
//! made by one request at a time.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use http::{Request, Response, Uri, Version, header::HOST, uri::Authority};
use hyper::{body::Incoming, client::conn::http2::SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::Scheme;
use tracing::debug;

use super::{Key, SendError, Upstreams, local};
use crate::{backend::Alpn, error::UpstreamError, forward};

/// Pings on an idle HTTP/2 upstream connection, to find a dead one before a
/// request does.
const H2_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// A shared upstream HTTP/2 connection.
#[derive(Clone)]
pub(super) struct Conn {
    /// Tells connections apart (a new one replaces a stale one only once).
    id: u64,
    sender: SendRequest<crate::body::UpBody>,
    /// `:scheme` and `:authority` of its requests.
    scheme: Scheme,
    authority: Option<Authority>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The HTTP/2 connection of one upstream, made by one request at a time.
pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

impl Upstreams {
    /// Makes the HTTP/2 connection of `key`.
    async fn connect_h2(&self, key: &Key) -> Result<Conn, UpstreamError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        match key {
            Key::Local { port, scheme, .. } => {
                let io = local::connect(*port, *scheme, Alpn::H2).await?;
                Ok(Conn {
                    id,
                    sender: handshake(TokioIo::new(io)).await?,
                    scheme: *scheme,
                    authority: forward::backend_authority(*port).parse().ok(),
                })
            }
            Key::Remote { peer, service, .. } => {
                let (io, accepted) = self.open_tunnel(*peer, service, true).await?;
                Ok(Conn {
                    id,
                    sender: handshake(io).await?,
                    scheme: accepted.scheme,
                    authority: accepted.host.and_then(|h| h.parse().ok()),
                })
            }
        }
    }

    /// The shared HTTP/2 connection of `key`: the open one, or a new one
    /// when there is none, it closed, or `stale` is that connection.
    async fn h2_conn(&self, key: &Key, stale: Option<&Conn>) -> Result<Conn, UpstreamError> {
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
        let conn = self.connect_h2(key).await?;
        debug!(?key, "new HTTP/2 upstream connection");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `request` on the shared HTTP/2 connection of `key`.
    pub(super) async fn send_h2(
        &self,
        key: &Key,
        mut request: Request<crate::body::UpBody>,
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
fn to_h2(request: &mut Request<crate::body::UpBody>, conn: &Conn) {
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

async fn handshake<T>(io: T) -> Result<SendRequest<crate::body::UpBody>, UpstreamError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .handshake(io)
        .await
        .map_err(|source| UpstreamError::H2Handshake { source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}
