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
    NodeHandle,
    health::{HealthCheck, Probe, Report, Tracker},
    record::Health,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span};

use crate::upstream;

/// Runs the health checks of the node's local services until `shutdown`.
pub async fn run(node: NodeHandle, shutdown: CancellationToken) {
    let mut watch = node.watch();
    let mut checkers: HashMap<String, (u16, HealthCheck, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted: HashMap<String, (u16, HealthCheck)> = watch
            .borrow_and_update()
            .local
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), (s.port, s.health.clone()?))))
            .collect();
        checkers.retain(|name, (port, check, task)| {
            let keep = wanted.get(name) == Some(&(*port, check.clone())) && !task.is_finished();
            if !keep {
                debug!(service = %name, "stopping health checks");
                task.abort();
            }
            keep
        });
        for (name, (port, check)) in wanted {
            if checkers.contains_key(&name) {
                continue;
            }
            debug!(service = %name, port, check = %check.probe, "starting health checks");
            let span = info_span!("health", service = %name);
            let task = tokio::spawn(
                checker(node.clone(), name.clone(), port, check.clone()).instrument(span),
            );
            checkers.insert(name, (port, check, task));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = watch.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, _, task)) in checkers {
        task.abort();
    }
}

/// Checks one service until the node no longer provides it with this check.
async fn checker(node: NodeHandle, service: String, port: u16, check: HealthCheck) {
    let mut tracker = Tracker::new(&check);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_failure: Option<String> = None;
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(check.timeout, probe(port, &check.probe)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{}: no answer within {}",
                describe(&check.probe),
                humantime::format_duration(check.timeout)
            )),
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

/// Runs one check: `Ok` with what passed, `Err` with why it failed.
async fn probe(port: u16, probe: &Probe) -> Result<String, String> {
    let what = describe(probe);
    match probe {
        Probe::Tcp => match upstream::connect_loopback(port).await {
            Ok(_) => Ok(format!("{what} to port {port}")),
            Err(e) => Err(format!("{what} to port {port}: {e}")),
        },
        Probe::Path(path) => {
            let tcp = upstream::connect_loopback(port)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            // Hook for HTTPS backends: wrap `tcp` in the backend TLS
            // connector here; `http_get` takes any byte stream.
            let host = crate::forward::backend_host(port);
            http_get(tcp, host, path, &what).await
        }
        Probe::Url(uri) => {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let tcp = connect_any(host, port)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            let authority = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .ok_or_else(|| format!("{what}: the URL has no usable host"))?;
            let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
            http_get(tcp, authority, path, &what).await
        }
    }
}

/// Connects to `host:port`, trying each address it resolves to.
async fn connect_any(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?;
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    if errors.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Err(errors.join("; "))
}

/// `GET path` on `io`; passes on a 2xx or 3xx status.
async fn http_get<T>(io: T, host: HeaderValue, path: &str, what: &str) -> Result<String, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("{what}: HTTP handshake: {e}"))?;
    let request = Request::get(path)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("devmesh-health/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{what}: {e}"))?;
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
            Err(e) => return Err(format!("{what}: {e}")),
        },
    }
    .map_err(|e| format!("{what}: {e}"))?;
    let status = response.status();
    let text = format!("{what}: {status}");
    if status.is_success() || status.is_redirection() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
