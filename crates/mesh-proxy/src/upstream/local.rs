//! The one way to a local backend: TCP to loopback (127.0.0.1, then ::1),
//! then TLS for services with `scheme = "https"`. The front door, the
//! provider side of tunnels and the health checker all connect here.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use mesh_core::Scheme;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::{
    backend::{self, Alpn},
    error::{ConnectAttempt, ConnectFailure, UpstreamError},
};

/// Time allowed for each TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a local backend: plain TCP, or TLS over it.
pub type LocalIo = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects to the backend on `port` as `scheme` says: TCP, then for https
/// the TLS handshake offering `alpn`.
pub async fn connect(port: u16, scheme: Scheme, alpn: Alpn) -> Result<LocalIo, UpstreamError> {
    let tcp = connect_loopback(port).await?;
    match scheme {
        Scheme::Http => Ok(Either::Left(tcp)),
        Scheme::Https => Ok(Either::Right(backend::tls(tcp, alpn).await?)),
    }
}

/// Connects to a local backend on 127.0.0.1, then on ::1 (dev servers that
/// bind `localhost` often listen on only one of them).
pub async fn connect_loopback(port: u16) -> Result<TcpStream, UpstreamError> {
    let addrs = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        .map(|ip: std::net::IpAddr| SocketAddr::new(ip, port));
    connect_first(addrs).await
}

/// Connects to the first of `addrs` that accepts, each within
/// [`CONNECT_TIMEOUT`]; when none does, the error lists every attempt.
pub async fn connect_first(
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<TcpStream, UpstreamError> {
    let mut attempts = Vec::new();
    for addr in addrs {
        let failure = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => ConnectFailure::Io(e),
            Err(_) => ConnectFailure::TimedOut(CONNECT_TIMEOUT),
        };
        attempts.push(ConnectAttempt { addr, failure });
    }
    Err(UpstreamError::Unreachable { attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_plain_and_lists_every_failed_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let io = connect(port, Scheme::Http, Alpn::Http1).await.unwrap();
        assert!(matches!(io, Either::Left(_)));
        drop(io);
        drop(listener);
        let e = connect(port, Scheme::Http, Alpn::Http1).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        let UpstreamError::Unreachable { attempts } = &e else {
            unreachable!()
        };
        assert_eq!(attempts.len(), 2);
        assert!(
            e.to_string().starts_with(&format!("127.0.0.1:{port}: ")),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("; [::1]:{port}: ")), "{e}");
    }

    #[tokio::test]
    async fn https_to_a_plain_backend_is_a_tls_error() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let e = connect(port, Scheme::Https, Alpn::Http1).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Tls { .. }), "{e:?}");
        assert!(e.to_string().starts_with("TLS handshake"), "{e}");
    }
}
