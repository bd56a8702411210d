//! The shutdown contract of [`Proxy`], over a real node and loopback
//! sockets: on cancel the front door refuses new connections, a response in
//! flight completes whole, an idle keep-alive connection closes, and
//! [`Proxy::drain`] cuts what outlives its grace period.

use std::time::Duration;

use mesh_core::{Config, LocalService, Namespace, Node, Scheme, record::ServiceRecord};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::{Drained, Proxy, policy::Routing};

/// A backend that answers `/slow` with 10 bytes in two halves 400 ms
/// apart, `/stuck` with a body it never finishes, anything else at once.
async fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                        .await;
                    if head.starts_with("GET /slow ") {
                        let _ = tcp.write_all(b"first").await;
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        let _ = tcp.write_all(b"-last").await;
                    } else if head.starts_with("GET /stuck ") {
                        let _ = tcp.write_all(b"never").await;
                        std::future::pending::<()>().await;
                    } else {
                        let _ = tcp.write_all(b"0123456789").await;
                    }
                }
            });
        }
    });
    port
}

/// Sends `GET path` on `tcp` and reads until `want` bytes arrived in all.
async fn get(tcp: &mut TcpStream, path: &str, want: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: slow.localhost\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the proxy answers")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads `tcp` to its end (or a reset), within 5 s.
async fn rest(mut tcp: TcpStream) -> String {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen))
        .await
        .expect("the connection ends");
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_what_is_in_flight_and_cuts_what_outlives_the_grace() {
    let mut config = Config::new(
        libp2p::identity::Keypair::generate_ed25519(),
        Namespace::new("team", None),
    );
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    let (node, _task) = Node::spawn(config).unwrap();
    let port = backend().await;
    let record = ServiceRecord::http("slow", semver::Version::new(1, 0, 0));
    node.register(LocalService {
        record,
        port,
        health: None,
        scheme: Scheme::Http,
    })
    .await
    .unwrap();
    let proxy = Proxy::new(node.clone(), Routing::new(Default::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(proxy.clone().serve(listener, shutdown.clone()));

    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        get(&mut idle, "/", "0123456789")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut slow = TcpStream::connect(addr).await.unwrap();
    get(&mut slow, "/slow", "first").await;
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    get(&mut stuck, "/stuck", "never").await;

    shutdown.cancel();
    serving.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a new connection is refused"
    );
    let draining = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.drain(Duration::from_millis(1500)).await }
    });
    assert_eq!(rest(idle).await, "", "the idle connection closes");
    assert_eq!(
        rest(slow).await,
        "-last",
        "the response in flight completes"
    );
    // The slow one ended within the drain; the idle one may have closed
    // before it began.
    let drained: Drained = draining.await.unwrap();
    assert_eq!(drained.cut, 1, "{drained:?}");
    assert!((1..=2).contains(&drained.finished), "{drained:?}");
    assert_eq!(rest(stuck).await, "", "the stuck one was cut");
    node.shutdown().await;
}
