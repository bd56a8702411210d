use std::time::Duration;

use devmesh_tests::{Daemon, backend::Backend, eventually, get};
use nix::sys::signal::Signal;

/// `api` runs on A and C; B reaches it, and keeps reaching it when A dies.
#[tokio::test(flavor = "multi_thread")]
async fn service_on_two_nodes_reachable_from_the_third() {
    let (mut a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let api_a = Backend::start("api-a").await;
    let api_c = Backend::start("api-c").await;
    let _ra = a.run_service("api", api_a.port(), "1.4.2").await;
    let _rc = c.run_service("api", api_c.port(), "1.4.2").await;
    eventually(Duration::from_secs(10), "both providers at B", || async {
        let s = b.status().await;
        (s["services"]
            .as_array()?
            .iter()
            .filter(|s| s["name"] == "api")
            .count()
            == 2)
            .then_some(())
    })
    .await;

    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    assert!(["api-a", "api-c"].contains(&r.text().as_str()));

    let peers = b.peers().await;
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p["connection"], "direct");
        assert!(
            p["addresses"][0]
                .as_str()
                .unwrap()
                .starts_with("/ip4/127.0.0.1/tcp/")
        );
        assert!(
            p["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "api@1.4.2")
        );
    }

    a.signal(Signal::SIGKILL);
    let _ = a.wait_exit().await;
    eventually(Duration::from_secs(15), "requests served by C", || async {
        let r = get(b.proxy, "api.localhost", "/name").await;
        (r.status == 200 && r.text() == "api-c").then_some(())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(b.proxy, "api.localhost", "/name").await.text(), "api-c");
    }
}

/// B and C only know A: B learns C's service through A and reaches C,
/// finding C's address through the DHT.
#[tokio::test(flavor = "multi_thread")]
async fn service_reachable_through_a_shared_bootstrap_peer() {
    let (a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    c.join(&a).await;
    let api = Backend::start("api-c").await;
    let _rc = c.run_service("api", api.port(), "3.1.0").await;
    b.join(&a).await;
    b.wait_for_service("api", |s| s["provider"] == c.peer_id.as_str())
        .await;
    let r = eventually(Duration::from_secs(15), "a response from C", || async {
        let r = get(b.proxy, "api.localhost", "/name").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.text(), "api-c");
    assert_eq!(r.header("x-devmesh-provider"), c.peer_id);
}
