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

/// A token with two bootstrap addresses, one of them down: the join
/// still succeeds through the other, and says which one it could not
/// reach.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_succeeds_when_one_bootstrap_address_is_down() {
    let (a, b, gone) = tokio::join!(
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start(),
        Daemon::start()
    );
    let dead = gone.p2p_addr.clone();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = a
        .cli(&["invite", "--bootstrap", &dead, "--bootstrap", &a.p2p_addr])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let started = Instant::now();
    let out = b.cli(&["join", &token]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 member(s) online"), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    eprintln!("joined in {:?} with one bootstrap down", started.elapsed());
    let backend = Backend::start("api-a").await;
    a.share_detached("api", backend.port(), "1.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;
}
