//! A real HTTP/WebSocket backend for tests and the demo.
//!
//! Routes: `/hello`, `/name`, `/headers` (JSON of what arrived: method, URI,
//! HTTP version, whether over TLS, headers), `/echo` (streams the request
//! body back), `/bytes/<n>` (streams n bytes of a known pattern), `/upload`
//! (counts and sums a streamed body), `/trailers` (a chunked body followed
//! by trailer fields), `/drip/<chunks>/<ms>` (a slow response: `chunks`
//! lines of [`DRIP_LINE`] bytes, one every `ms` milliseconds), `/ws` (WebSocket: greets, then echoes text and binary
//! frames), `/healthz` (answers with the status set by
//! [`Backend::set_health`], 200 at first).
//!
//! It speaks HTTP/1.1 only ([`Backend::start`]), HTTP/1.1 and h2c with
//! prior knowledge ([`Backend::start_h2`]), or either over TLS with a
//! self-signed certificate for `localhost` ([`Backend::start_tls`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _, stream};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, hyper::Error>;

/// Byte `i` of the `/bytes` pattern.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Chunk size of `/bytes` responses.
const CHUNK: u64 = 64 * 1024;

/// The `/bytes` pattern from offset 0, one chunk plus one period long, so
/// that every chunk is a slice of it.
static PATTERN: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
    (0..CHUNK + 251)
        .map(pattern_byte)
        .collect::<Vec<u8>>()
        .into()
});

/// Length of each line of a `/drip` response (`drip 0000000001\n`).
pub const DRIP_LINE: usize = 16;

/// Line `i` (from 1) of a `/drip` response.
pub fn drip_line(i: u64) -> String {
    format!("drip {i:010}\n")
}

/// The whole body a `/drip/<chunks>/…` response sends.
pub fn drip_body(chunks: u64) -> String {
    (1..=chunks).map(drip_line).collect()
}

/// Which HTTP versions a backend speaks, and whether over TLS.
#[derive(Clone)]
pub enum Mode {
    /// HTTP/1.1 only (upgrades included).
    Http1,
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c), told apart by the
    /// HTTP/2 preface.
    Auto,
    /// TLS with ALPN `h2` and `http/1.1`, then as [`Mode::Auto`].
    Tls(Arc<tokio_rustls::rustls::ServerConfig>),
}

/// A backend running in the current tokio runtime until dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, returned by `/name` and in `x-backend-name`.
    pub name: String,
    /// The PEM of its self-signed certificate, when it serves TLS.
    pub cert_pem: Option<String>,
    connections: Arc<AtomicU64>,
    shutdown: CancellationToken,
    health: Arc<AtomicU16>,
}

impl Backend {
    /// Starts an HTTP/1.1 backend on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        Self::start_mode(name, Mode::Http1, None).await
    }

    /// Starts a backend that speaks HTTP/1.1 and h2c (prior knowledge).
    pub async fn start_h2(name: &str) -> Backend {
        Self::start_mode(name, Mode::Auto, None).await
    }

    /// Starts a TLS backend (HTTP/1.1 and HTTP/2 by ALPN) with a new
    /// self-signed certificate for `localhost`.
    pub async fn start_tls(name: &str) -> Backend {
        let (config, pem) = self_signed_tls();
        Self::start_mode(name, Mode::Tls(config), Some(pem)).await
    }

    async fn start_mode(name: &str, mode: Mode, cert_pem: Option<String>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let shutdown = CancellationToken::new();
        let health = Arc::new(AtomicU16::new(200));
        let connections = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve_mode(
            listener,
            name.to_owned(),
            mode,
            connections.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        Backend {
            addr,
            name: name.to_owned(),
            cert_pem,
            connections,
            shutdown,
            health,
        }
    }

    /// Sets the status `/healthz` answers with from now on.
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::Relaxed);
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A TLS server configuration with a fresh self-signed certificate for
/// `localhost`, offering ALPN `h2` and `http/1.1`; and the certificate PEM.
pub fn self_signed_tls() -> (Arc<tokio_rustls::rustls::ServerConfig>, String) {
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generating a certificate");
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("TLS server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (Arc::new(config), pem)
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the backend routes over HTTP/1.1 on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, name: String, shutdown: CancellationToken) {
    serve_mode(
        listener,
        name,
        Mode::Http1,
        Arc::default(),
        Arc::new(AtomicU16::new(200)),
        shutdown,
    )
    .await
}

/// Serves the backend routes in `mode` on `listener` until `shutdown`,
/// counting accepted connections in `connections`, `/healthz` answering
/// with the status in `health`.
pub async fn serve_mode(
    listener: TcpListener,
    name: String,
    mode: Mode,
    connections: Arc<AtomicU64>,
    health: Arc<AtomicU16>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = tcp.set_nodelay(true);
        connections.fetch_add(1, Ordering::Relaxed);
        let name = name.clone();
        let health = health.clone();
        let conn_shutdown = shutdown.clone();
        let mode = mode.clone();
        tokio::spawn(async move {
            let tls = matches!(mode, Mode::Tls(_));
            let service = service_fn(move |req| {
                let name = name.clone();
                let health = health.load(Ordering::Relaxed);
                async move { Ok::<_, Infallible>(route(req, &name, tls, health).await) }
            });
            let serving = async move {
                match mode {
                    Mode::Http1 => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .with_upgrades()
                            .await;
                    }
                    Mode::Auto => {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await;
                    }
                    Mode::Tls(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                        else {
                            return;
                        };
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            tokio::select! {
                _ = serving => {}
                _ = conn_shutdown.cancelled() => {}
            }
        });
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, name: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-backend-name", name)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(body))
        .expect("response")
}

async fn route(mut req: Request<Incoming>, name: &str, tls: bool, health: u16) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => {
            let status = StatusCode::from_u16(health).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, name, format!("{status}\n"))
        }
        "/" => text(
            StatusCode::OK,
            name,
            format!("hello from {name}\nroutes: /hello /name /headers /echo /healthz\n"),
        ),
        "/hello" => text(StatusCode::OK, name, format!("hello from {name}\n")),
        "/name" => text(StatusCode::OK, name, name.to_owned()),
        "/headers" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "tls": tls,
                "headers": headers,
            });
            text(StatusCode::OK, name, body.to_string())
        }
        "/echo" => Response::builder()
            .header("x-backend-name", name)
            .body(req.into_body().boxed())
            .expect("response"),
        "/upload" => {
            let mut body = req.into_body();
            let (mut count, mut sum) = (0u64, 0u64);
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            count += data.len() as u64;
                            sum = data.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                        }
                    }
                    Err(e) => return text(StatusCode::BAD_REQUEST, name, e.to_string()),
                }
            }
            text(
                StatusCode::OK,
                name,
                serde_json::json!({"bytes": count, "sum": sum}).to_string(),
            )
        }
        "/ws" => websocket(&mut req, name),
        "/trailers" => {
            // Data, then trailers: the way gRPC ends a response.
            let frames = stream::iter([
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"trailers follow\n"))),
                Ok(Frame::trailers(
                    [
                        (
                            header::HeaderName::from_static("x-checksum"),
                            header::HeaderValue::from_static("42"),
                        ),
                        (
                            header::HeaderName::from_static("x-backend-done"),
                            header::HeaderValue::from_static("yes"),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                )),
            ]);
            Response::builder()
                .header("x-backend-name", name)
                // HTTP/1.1 clients get trailers only when they are announced.
                .header(header::TRAILER, "x-checksum, x-backend-done")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .expect("response")
        }
        p if p.starts_with("/drip/") => {
            let parsed = p["/drip/".len()..]
                .split_once('/')
                .and_then(|(n, ms)| Some((n.parse::<u64>().ok()?, ms.parse::<u64>().ok()?)));
            let Some((n, ms)) = parsed else {
                return text(StatusCode::BAD_REQUEST, name, "use /drip/<chunks>/<ms>");
            };
            let lines = stream::unfold(1u64, move |i| async move {
                if i > n {
                    return None;
                }
                if i > 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                let line = Bytes::from(drip_line(i));
                Some((Ok::<_, hyper::Error>(Frame::data(line)), i + 1))
            });
            Response::builder()
                .header("x-backend-name", name)
                .header(header::CONTENT_LENGTH, n * DRIP_LINE as u64)
                .body(BodyExt::boxed(StreamBody::new(lines)))
                .expect("response")
        }
        p if p.starts_with("/bytes/") => {
            let Ok(n) = p["/bytes/".len()..].parse::<u64>() else {
                return text(StatusCode::BAD_REQUEST, name, "bad length");
            };
            let chunks = stream::unfold(0u64, move |sent| async move {
                if sent >= n {
                    return None;
                }
                let len = CHUNK.min(n - sent);
                // A slice of the precomputed pattern: serving costs no CPU
                // that a benchmark would take away from the proxy.
                let start = (sent % 251) as usize;
                let data = PATTERN.slice(start..start + len as usize);
                Some((Ok::<_, hyper::Error>(Frame::data(data)), sent + len))
            });
            Response::builder()
                .header("x-backend-name", name)
                .header(header::CONTENT_LENGTH, n)
                .body(BodyExt::boxed(StreamBody::new(chunks)))
                .expect("response")
        }
        _ => text(StatusCode::NOT_FOUND, name, format!("no route {path}\n")),
    }
}

fn websocket(req: &mut Request<Incoming>, name: &str) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, name, "not a websocket request");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let greeting = format!("welcome from {name}");
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws.send(Message::text(greeting)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(full(Bytes::new()))
        .expect("response")
}
