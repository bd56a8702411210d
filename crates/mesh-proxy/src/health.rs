//! Health checks of this node's local services.
//!
//! [`run`] watches the node's local services and keeps one checker task per
//! service that has a [`HealthCheck`]: it starts one when such a service is
//! registered and stops it when the service is withdrawn or replaced with
//! another port or check. A checker probes the backend every
//! `check.interval`, feeds the results to a [`Tracker`] and reports each
//! flip to the node, which re-announces the service with its new health.
//!
//! ```no_run
//! # async fn demo(node: mesh_core::NodeHandle) {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(mesh_proxy::health::run(node, shutdown));
//! # }
//! ```

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mesh_core::{
    NodeHandle, Scheme,
    health::{HealthCheck, Probe, Report, Tracker},
    record::Health,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span};

use crate::{
    backend::Alpn,
    error::{Chain, ProbeError, UpstreamError},
    forward,
    upstream::local,
};

/// What a checker checks: the backend's port and scheme, and the check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    port: u16,
    scheme: Scheme,
    check: HealthCheck,
}

/// Runs the health checks of the node's local services until `shutdown`.
pub async fn run(node: NodeHandle, shutdown: CancellationToken) {
    let mut watch = node.watch();
    let mut checkers: HashMap<String, (Checked, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted: HashMap<String, Checked> = watch
            .borrow_and_update()
            .local
            .iter()
            .filter_map(|(name, s)| {
                let check = s.health.clone()?;
                let (port, scheme) = (s.port, s.scheme);
                Some((
                    name.clone(),
                    Checked {
                        port,
                        scheme,
                        check,
                    },
                ))
            })
            .collect();
        checkers.retain(|name, (checked, task)| {
            let keep = wanted.get(name) == Some(checked) && !task.is_finished();
            if !keep {
                debug!(service = %name, "stopping health checks");
                task.abort();
            }
            keep
        });
        for (name, checked) in wanted {
            if checkers.contains_key(&name) {
                continue;
            }
            debug!(service = %name, port = checked.port, check = %checked.check.probe, "starting health checks");
            let span = info_span!("health", service = %name);
            let task =
                tokio::spawn(checker(node.clone(), name.clone(), checked.clone()).instrument(span));
            checkers.insert(name, (checked, task));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = watch.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, task)) in checkers {
        task.abort();
    }
}

/// Checks one service until the node no longer provides it with this check.
async fn checker(node: NodeHandle, service: String, checked: Checked) {
    let Checked {
        port,
        scheme,
        check,
    } = checked;
    let mut tracker = Tracker::new(&check);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_failure: Option<String> = None;
    loop {
        ticker.tick().await;
        let probed = tokio::time::timeout(check.timeout, probe(port, scheme, &check.probe)).await;
        let result = match probed {
            Ok(result) => result.map_err(|e| Chain(&e).to_string()),
            Err(_) => Err(Chain(&ProbeError::TimedOut {
                what: describe(&check.probe),
                timeout: check.timeout,
            })
            .to_string()),
        };
        let flipped = tracker.record(result.is_ok());
        if let Some(health) = flipped {
            match &result {
                Ok(what) => info!(service = %service, %health, "service is now {health}: {what}"),
                Err(why) => info!(service = %service, %health, "service is now {health}: {why}"),
            }
        }
        let new_failure = match &result {
            Err(why) if reported_failure.as_ref() != Some(why) => Some(why.clone()),
            _ => None,
        };
        // Report flips and new failure reasons; and put the health back when
        // the record lost it (the service was registered again meanwhile).
        let announced = node.snapshot().local.get(&service).map(|s| s.record.health);
        let stale = tracker.health() != Health::Unknown && announced != Some(tracker.health());
        if flipped.is_none() && new_failure.is_none() && !stale {
            continue;
        }
        if new_failure.is_some() {
            reported_failure.clone_from(&new_failure);
        }
        let report = Report {
            service: service.clone(),
            port,
            check: check.clone(),
            health: tracker.health(),
            last_failure: new_failure,
        };
        match node.set_health(report).await {
            Ok(true) => {}
            // Withdrawn or replaced: the watcher starts a new checker if needed.
            Ok(false) | Err(_) => return,
        }
    }
}

fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Tcp => "TCP connect".to_owned(),
        Probe::Path(path) => format!("GET {path}"),
        Probe::Url(uri) => format!("GET {uri}"),
    }
}

/// Runs one check of the backend on `port` that serves `scheme`: `Ok` with
/// what passed. A path is fetched the way the proxy reaches the backend
/// (TLS for https); a URL as it says (plain HTTP). `devmesh up` checks the
/// services it starts with it too.
pub async fn probe(port: u16, scheme: Scheme, probe: &Probe) -> Result<String, ProbeError> {
    let what = describe(probe);
    match probe {
        Probe::Tcp => {
            let what = format!("{what} to port {port}");
            match local::connect_loopback(port).await {
                Ok(_) => Ok(what),
                Err(source) => Err(ProbeError::Connect { what, source }),
            }
        }
        Probe::Path(path) => {
            let io = match local::connect(port, scheme, Alpn::Http1).await {
                Ok(io) => io,
                Err(source) => return Err(ProbeError::Connect { what, source }),
            };
            http_get(io, forward::backend_host(port), path, what).await
        }
        Probe::Url(uri) => {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let addrs = match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(source) => {
                    let host = host.to_owned();
                    return Err(ProbeError::Resolve { what, host, source });
                }
            };
            if addrs.is_empty() {
                let host = host.to_owned();
                return Err(ProbeError::NoAddress { what, host });
            }
            let tcp = match local::connect_first(addrs).await {
                Ok(tcp) => tcp,
                Err(source) => return Err(ProbeError::Connect { what, source }),
            };
            let Some(authority) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            else {
                return Err(ProbeError::NoHost { what });
            };
            let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
            http_get(tcp, authority, path, what).await
        }
    }
}

/// `GET path` on `io`; passes on a 2xx or 3xx status.
async fn http_get<T>(
    io: T,
    host: HeaderValue,
    path: &str,
    what: String,
) -> Result<String, ProbeError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |what: &str, source| ProbeError::Http {
        what: what.to_owned(),
        source,
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(source) => return Err(failed(&what, UpstreamError::Handshake { source })),
    };
    let request = Request::get(path)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("devmesh-health/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(request) => request,
        Err(source) => return Err(ProbeError::Request { what, source }),
    };
    // The connection is driven here, not in a task of its own, so a check
    // cut off by its timeout leaves nothing behind.
    let exchange = sender.send_request(request);
    tokio::pin!(conn, exchange);
    let response = tokio::select! {
        r = &mut exchange => r,
        r = &mut conn => match r {
            // With `Connection: close` the connection can end right after the
            // answer; the answer is then ready.
            Ok(()) => exchange.await,
            Err(e) => Err(e),
        },
    };
    let status = match response {
        Ok(response) => response.status(),
        Err(e) => return Err(failed(&what, UpstreamError::Http(e))),
    };
    if status.is_success() || status.is_redirection() {
        Ok(format!("{what}: {status}"))
    } else {
        Err(ProbeError::Status { what, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe of a plain-HTTP backend, failures as the text users read.
    async fn probe(port: u16, p: &Probe) -> Result<String, String> {
        super::probe(port, Scheme::Http, p)
            .await
            .map_err(|e| Chain(&e).to_string())
    }

    async fn server(status: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let ok = head.starts_with("get /healthz ")
                    && head.contains(&format!("host: localhost:{port}"));
                let line = if ok { status } else { "400 Bad Request" };
                let _ = tcp
                    .write_all(format!("HTTP/1.1 {line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probe_passes_on_2xx_3xx_only() {
        let path = Probe::Path("/healthz".into());
        assert_eq!(
            probe(server("200 OK").await, &path).await,
            Ok("GET /healthz: 200 OK".into())
        );
        assert!(probe(server("302 Found").await, &path).await.is_ok());
        assert_eq!(
            probe(server("503 Service Unavailable").await, &path).await,
            Err("GET /healthz: 503 Service Unavailable".into())
        );
        let port = server("204 No Content").await;
        let url = Probe::parse(&format!("http://localhost:{port}/healthz")).unwrap();
        assert!(probe(1, &url).await.is_ok());
        // The Host is the URL's authority, which the test server refuses here.
        let url = Probe::parse(&format!("http://127.0.0.1:{port}/healthz")).unwrap();
        assert!(probe(1, &url).await.unwrap_err().contains("400"));
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(probe(port, &Probe::Tcp).await.is_ok());
        drop(listener);
        let e = probe(port, &Probe::Tcp).await.unwrap_err();
        assert!(
            e.starts_with(&format!("TCP connect to port {port}:")),
            "{e}"
        );
    }

    /// A TLS backend with a fresh self-signed certificate for `localhost`
    /// whose `/healthz` answers 204.
    async fn tls_server() -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio_rustls::rustls;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz ");
                let line = if ok {
                    "204 No Content"
                } else {
                    "404 Not Found"
                };
                let _ = tls
                    .write_all(format!("HTTP/1.1 {line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn https_backends_are_probed_over_tls() {
        let port = tls_server().await;
        let path = Probe::Path("/healthz".into());
        assert_eq!(
            super::probe(port, Scheme::Https, &path).await.unwrap(),
            "GET /healthz: 204 No Content"
        );
        // In plain HTTP the TLS server cannot be understood.
        assert!(probe(port, &path).await.is_err());
        // A TCP check stays a TCP connect.
        assert!(super::probe(port, Scheme::Https, &Probe::Tcp).await.is_ok());
        // TLS to a plain backend fails with the handshake as the reason.
        let plain = server("200 OK").await;
        let e = super::probe(plain, Scheme::Https, &path).await.unwrap_err();
        let text = Chain(&e).to_string();
        assert!(text.starts_with("GET /healthz: TLS handshake"), "{text}");
    }
}
