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

/// A team larger than the full mesh (here 3 other members, instead of 12,
/// so that 8 nodes make a large team): each node keeps at most 3 member
/// links once the newest are trimmed, every node still sees every
/// service, and a node reaches every provider, connecting on demand to
/// those it has no link to.
#[tokio::test(flavor = "multi_thread")]
async fn a_team_larger_than_the_full_mesh_keeps_few_links_and_reaches_every_provider() {
    const NODES: usize = 8;
    let bounded = ["--full-mesh-up-to", "3"];
    let nodes = futures::future::join_all((0..NODES).map(|_| Daemon::start_with(&bounded))).await;
    let backends = futures::future::join_all((0..NODES).map(|i| {
        let name = format!("s{i}");
        async move { Backend::start(&name).await }
    }))
    .await;
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            node.join(&nodes[0]).await;
        }
        node.share_detached(&format!("s{i}"), backends[i].port(), "1.0.0")
            .await;
    }
    let member_links = |peers: serde_json::Value| {
        peers
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["kind"] == "member").count())
    };
    // Trimming waits until a link is 30 s old.
    eventually(
        Duration::from_secs(120),
        "every node with at most 3 links and all 8 services",
        || async {
            for node in &nodes {
                let services = node.status().await["services"].as_array()?.len();
                let links = member_links(node.peers().await);
                if services != NODES || links > 3 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let a = &nodes[0];
    let before = member_links(a.peers().await);
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let r = get(a.proxy, &format!("s{i}.localhost"), "/name").await;
        assert_eq!(r.status, 200, "s{i}: {}", r.text());
        assert_eq!(r.text(), format!("s{i}"));
        assert_eq!(r.header("x-devmesh-provider"), node.peer_id);
    }
    assert!(
        member_links(a.peers().await) > before,
        "A connected on demand to providers it had no link to"
    );
    assert!(
        a.log().contains("connecting on demand"),
        "A's log names the on-demand connections"
    );
}

/// AutoNAT's probes (2 s after start, then every 30 s until sure) make
/// each node dial the other back: a second connection, which nothing
/// closed and gossipsub kept open, one more per probe. The node that
/// dialled it now closes it at once, so two nodes keep one connection.
#[tokio::test(flavor = "multi_thread")]
async fn autonat_dial_backs_leave_one_connection_between_two_nodes() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    // Long enough for two probes each way.
    tokio::time::sleep(Duration::from_secs(40)).await;
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(5),
            "one connection to the other node",
            || async {
                let peers = node.peers().await;
                let addrs = peers[0]["addresses"].as_array()?.len();
                (addrs == 1).then_some(())
            },
        )
        .await;
    }
}
