//! The front door: the accept loop, the TLS peek, and the serving of one
//! connection (hyper-util's auto server: HTTP/1.1 with upgrades, or HTTP/2
//! by the connection preface). [`pipeline`] handles each request.

mod api;
pub(crate) mod limit;
pub(crate) mod observe;
mod own;
mod pipeline;

use std::{
    convert::Infallible,
    net::SocketAddr,
    ops::ControlFlow,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderValue, Request};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Error, Proxy, drain::run_until, forward, route, stamp, upstream};

/// First byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Time a client has to finish its TLS handshake once it started it.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a front-door connection keeps between its requests.
struct Front {
    session: upstream::Session,
    /// The client's IP address as an `X-Forwarded-For` value.
    client_value: HeaderValue,
    local: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    proto: &'static str,
    stamp: Mutex<Option<stamp::Stamp>>,
    host_cache: Mutex<route::HostCache>,
    /// The metric series its last request was counted in.
    series: Arc<crate::metrics::LastSeries>,
}

impl Proxy {
    /// Serves the front door on `listener` until `shutdown` is cancelled.
    /// Then the listener closes at once (new connections are refused), and
    /// every open connection is told to finish: requests in flight complete,
    /// idle connections close. [`Proxy::drain`] waits for them.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let local_addr = listener.local_addr()?;
        let _ = self.front_addr.set(local_addr);
        info!(addr = %local_addr, "proxy front door listening");
        // The dashboard's rates need samples from before it is opened.
        self.console.start(
            self.node.clone(),
            self.observe.metrics.clone(),
            self.closing.clone(),
        );
        loop {
            let (tcp, client) = tokio::select! {
                _ = shutdown.cancelled() => break,
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
            let Some(permit) = self.front_limit.admit() else {
                self.tasks
                    .spawn(limit::refuse(tcp, self.front_limit.limit()));
                continue;
            };
            let proxy = self.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                proxy.accept(tcp, client, local_addr).await;
            });
        }
        drop(listener);
        self.closing.cancel();
        info!(addr = %local_addr, "proxy front door closed");
        Ok(())
    }

    /// Sets how many front-door connections are served at once (more get
    /// a 503 and are closed), before [`Proxy::serve`]; the default is
    /// [`limit::DEFAULT_MAX_CONNECTIONS`].
    pub fn set_max_connections(&self, limit: usize) {
        self.front_limit.set(limit);
    }

    /// Starts one accepted connection: TLS when it begins with a TLS
    /// handshake, plain HTTP otherwise.
    async fn accept(self: Arc<Self>, tcp: TcpStream, client: SocketAddr, local: SocketAddr) {
        // HTTPS and plain HTTP share the port: a TLS handshake starts with
        // 0x16, an HTTP request with a letter.
        // A client that sends nothing does not hold its connection longer
        // than one slow to send its request's head.
        let mut first = [0u8; 1];
        let peek = tokio::time::timeout(limit::HEADER_READ_TIMEOUT, tcp.peek(&mut first));
        let peeked = tokio::select! {
            _ = self.closing.cancelled() => return,
            peeked = peek => peeked,
        };
        match peeked {
            Ok(Ok(1..)) => {}
            Ok(Ok(0) | Err(_)) => return,
            Err(_) => return debug!(%client, "closed a connection that sent nothing"),
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return self.serve_connection(tcp, client, local, "http").await;
        }
        let Some(acceptor) = self.tls.clone() else {
            warn!(%client, "a client started HTTPS, but this front door serves plain HTTP only");
            return;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
        let handshake = tokio::select! {
            _ = self.closing.cancelled() => return,
            handshake = handshake => handshake,
        };
        match handshake {
            Ok(Ok(tls)) => self.serve_connection(tls, client, local, "https").await,
            Ok(Err(e)) => log_handshake_error(client, &e),
            Err(_) => debug!(%client, "TLS handshake timed out"),
        }
    }

    /// Serves one front-door connection until it ends: HTTP/1.1 (upgrades
    /// such as WebSocket included) or HTTP/2, told apart by the HTTP/2
    /// connection preface (h2c with prior knowledge, or h2 after TLS ALPN).
    /// `client` is the peer's address, `local` the front door's, `proto`
    /// `http` or `https` (for `X-Forwarded-Proto`). When the front door
    /// closes, the connection shuts down gracefully.
    pub async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        client: SocketAddr,
        local: SocketAddr,
        proto: &'static str,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _open = self.observe.metrics.as_ref().map(|m| m.connection());
        let front = Arc::new(Front {
            session: upstream::Session::new(self.upstreams.clone()),
            client_value: forward::client_value(client.ip()),
            local,
            proto,
            stamp: Mutex::new(None),
            host_cache: Mutex::default(),
            series: Arc::default(),
        });
        let proxy = self.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let proxy = proxy.clone();
            let front = front.clone();
            async move {
                if req.version() == http::Version::HTTP_2 {
                    forward::authority_to_host(&mut req);
                }
                Ok::<_, Infallible>(proxy.observe(req, &front).await)
            }
        });
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let served = run_until(conn, &self.closing, |conn| {
            conn.graceful_shutdown();
            ControlFlow::Continue(())
        })
        .await;
        if let Some(Err(e)) = served {
            debug!(%client, error = %e, "front-door connection ended with an error");
        }
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
