//! Faults on loopback: a provider that restarts with the same identity.

use std::time::{Duration, Instant};

use devmesh_tests::{Daemon, backend::Backend, eventually, get, servers::free_port};

/// A restarts (same home, identity and port) while B had joined it: B
/// routes to A's service again within 3 s of A being back.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_provider_is_routed_to_again_within_3_s() {
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let args = ["--listen", listen.as_str()];
    let (mut a, b) = tokio::join!(Daemon::start_with(&args), Daemon::start());
    b.join(&a).await;
    let backend = Backend::start("api-a").await;
    a.share_detached("api", backend.port(), "1.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;
    assert_eq!(get(b.proxy, "api.localhost", "/name").await.status, 200);

    a.restart().await;
    let back = Instant::now();
    eventually(
        Duration::from_secs(30),
        "B to reach A's api again",
        || async { (get(b.proxy, "api.localhost", "/name").await.status == 200).then_some(()) },
    )
    .await;
    let took = back.elapsed();
    eprintln!("B routed to the restarted A {took:?} after it was back");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
