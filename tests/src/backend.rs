//! A real HTTP/WebSocket backend for tests and the demo.
//!
//! Routes: `/hello`, `/name`, `/headers` (JSON of what arrived), `/echo`
//! (streams the request body back), `/bytes/<n>` (streams n bytes of a
//! known pattern), `/upload` (counts and sums a streamed body), `/ws`
//! (WebSocket: greets, then echoes text and binary frames), `/healthz`
//! (answers with the status set by [`Backend::set_health`], 200 at first).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _, stream};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
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

/// A backend running in the current tokio runtime until dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, returned by `/name` and in `x-backend-name`.
    pub name: String,
    shutdown: CancellationToken,
    health: Arc<AtomicU16>,
}

impl Backend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let shutdown = CancellationToken::new();
        let health = Arc::new(AtomicU16::new(200));
        tokio::spawn(serve_with_health(
            listener,
            name.to_owned(),
            health.clone(),
            shutdown.clone(),
        ));
        Backend {
            addr,
            name: name.to_owned(),
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
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the backend routes on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, name: String, shutdown: CancellationToken) {
    serve_with_health(listener, name, Arc::new(AtomicU16::new(200)), shutdown).await;
}

/// Serves the backend routes, `/healthz` answering with the status in `health`.
async fn serve_with_health(
    listener: TcpListener,
    name: String,
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
        let name = name.clone();
        let health = health.clone();
        let conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let name = name.clone();
                let health = health.load(Ordering::Relaxed);
                async move { Ok::<_, Infallible>(route(req, &name, health).await) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
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

async fn route(mut req: Request<Incoming>, name: &str, health: u16) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => {
            let status = StatusCode::from_u16(health).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, name, format!("{status}\n"))
        }
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
