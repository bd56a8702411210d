//! The site over a real node and the front door on loopback: the page and
//! its files, the state and graph documents, the event stream pushing a
//! service registered after it opened, the inspector's placeholder, and
//! the refusals.

use std::time::Duration;

use mesh_core::{Config, LocalService, Namespace, Node, Scheme, record::ServiceRecord};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use super::is_site_request;
use crate::{Observe, Proxy, metrics::Metrics, policy::Routing};

async fn front_door() -> (
    std::net::SocketAddr,
    mesh_core::NodeHandle,
    CancellationToken,
) {
    let mut config = Config::new(
        libp2p::identity::Keypair::generate_ed25519(),
        Namespace::new("team", None),
    );
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    let (node, _task) = Node::spawn(config).unwrap();
    let observe = Observe::default();
    let metrics = std::sync::Arc::new(Metrics::new(&node, &observe));
    let observe = observe.with_metrics(metrics);
    let proxy = Proxy::observed(
        node.clone(),
        Routing::new(Default::default()),
        None,
        observe,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(proxy.serve(listener, shutdown.clone()));
    (addr, node, shutdown)
}

/// Sends one request and reads the whole answer (the server closes).
async fn call(addr: std::net::SocketAddr, head: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: devmesh.localhost:7700\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let status = headers[9..12].parse().unwrap();
    (status, headers.to_ascii_lowercase(), body.to_owned())
}

/// Reads from `stream` into `seen` until it holds `want`.
async fn read_until(stream: &mut TcpStream, want: &str, seen: &mut String) {
    let mut buf = [0u8; 16384];
    while !seen.contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn the_site_is_the_host_devmesh_localhost() {
    let host = |h: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, h.parse().unwrap());
        is_site_request(&"/".parse().unwrap(), &headers)
    };
    assert!(host("devmesh.localhost"));
    assert!(host("DevMesh.localhost:7700"));
    assert!(!host("api.localhost"));
    assert!(!host("devmesh"));
    let absolute: http::Uri = "http://devmesh.localhost:7700/api/state".parse().unwrap();
    assert!(is_site_request(&absolute, &http::HeaderMap::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_serves_the_page_state_graph_and_events() {
    let (addr, node, shutdown) = front_door().await;

    let (status, headers, body) = call(addr, "GET / HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(body.contains("/assets/app.js"));
    let (status, headers, _) = call(addr, "GET /assets/graph.js HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(headers.contains("text/javascript"), "{headers}");
    assert_eq!(call(addr, "GET /assets/nope.js HTTP/1.1").await.0, 404);

    let (status, _, body) = call(addr, "GET /api/state HTTP/1.1").await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["node"]["peer"], node.peer_id().to_string());
    assert_eq!(state["metrics"], true);

    let (status, _, body) = call(addr, "GET /metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(body.contains("devmesh_open_connections"));

    // This front door runs without an inspector, and the API says so.
    let (status, _, body) = call(addr, "GET /api/requests?limit=5 HTTP/1.1").await;
    assert_eq!(status, 404);
    assert!(body.contains("the inspector is off"), "{body}");
    let (status, _, body) = call(
        addr,
        "POST /api/requests/1/replay HTTP/1.1\r\nOrigin: http://evil.example\r\nContent-Length: 0",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(call(addr, "DELETE /api/state HTTP/1.1").await.0, 405);
    assert_eq!(call(addr, "GET /api/nothing HTTP/1.1").await.0, 404);
    let (status, _, body) = call(addr, "GET /api/graph?format=svg HTTP/1.1").await;
    assert_eq!((status, body.contains("format=dot")), (400, true));

    // The event stream opens with the state and pushes a service
    // registered afterwards.
    let mut events = TcpStream::connect(addr).await.unwrap();
    events
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: devmesh.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut events, "event: state\ndata: {", &mut seen).await;
    assert!(seen.contains("text/event-stream"), "{seen}");
    node.register(LocalService {
        record: ServiceRecord::http("pushed", semver::Version::new(1, 2, 3)),
        port: 9,
        health: None,
        scheme: Scheme::Http,
    })
    .await
    .unwrap();
    read_until(&mut events, "\"name\":\"pushed\"", &mut seen).await;

    let (status, headers, dot) = call(addr, "GET /api/graph?format=dot HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(headers.contains("text/vnd.graphviz"), "{headers}");
    let (nodes, _) = super::graph::tests::check_dot(&dot);
    assert!(nodes.contains(&"service:pushed".to_owned()), "{dot}");
    shutdown.cancel();
}
