use bytes::Bytes;
use devmesh_tests::{Daemon, Shared, backend::Backend, get, request};

/// Two nodes: A provides `api`, B reaches it through every routing form.
#[tokio::test(flavor = "multi_thread")]
async fn remote_get_and_post_through_every_routing_form() {
    let Shared {
        a,
        b,
        backend: api,
        run: _run,
    } = Shared::start("api", "api-on-a", "1.4.2").await;

    // Host header forms.
    for host in [
        "api.localhost",
        &format!("api.localhost:{}", b.proxy.port()),
        "api.devmesh",
        "api",
    ] {
        let r = get(b.proxy, host, "/hello").await;
        assert_eq!(r.status, 200, "host {host}: {}", r.text());
        assert_eq!(r.text(), "hello from api-on-a\n");
        assert_eq!(r.header("x-devmesh-route"), "remote-direct");
        assert_eq!(r.header("x-devmesh-provider"), a.peer_id);
        assert_eq!(r.header("x-devmesh-service"), "api@1.4.2");
    }
    // Explicit service header on a host that names nothing.
    let r = request(
        b.proxy,
        "GET",
        "127.0.0.1",
        "/name",
        Bytes::new(),
        &[("x-devmesh-service", "api")],
    )
    .await;
    assert_eq!(r.text(), "api-on-a");

    // POST body arrives intact, with forwarding headers and the Host rewritten.
    let body = Bytes::from(vec![7u8; 300_000]);
    let r = request(b.proxy, "POST", "api.localhost", "/echo", body.clone(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let r = get(b.proxy, "api.localhost:9999", "/headers?q=1").await;
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["uri"], "/headers?q=1");
    assert_eq!(seen["headers"]["host"], format!("localhost:{}", api.port()));
    assert_eq!(seen["headers"]["x-forwarded-host"], "api.localhost:9999");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("x-devmesh-service").is_none());

    // The local route on A.
    let r = get(a.proxy, "api.localhost", "/hello").await;
    assert_eq!(r.header("x-devmesh-route"), "local");
    assert_eq!(r.text(), "hello from api-on-a\n");
}

/// The real curl: `api.localhost` resolution and `-x` proxy (absolute-form) use.
#[tokio::test(flavor = "multi_thread")]
async fn curl_host_forms_and_http_proxy() {
    let Shared {
        a: _a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "api", "1.0.0").await;
    let port = b.proxy.port();
    for args in [
        vec![
            "-sS".to_owned(),
            "-H".into(),
            "Host: api.localhost".into(),
            format!("http://127.0.0.1:{port}/hello"),
        ],
        vec![
            "-sS".to_owned(),
            format!("http://api.localhost:{port}/hello"),
        ],
        vec![
            "-sS".to_owned(),
            "-x".into(),
            format!("http://127.0.0.1:{port}"),
            "http://api.devmesh/hello".into(),
        ],
    ] {
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .output()
            .await
            .expect("curl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from api\n",
            "curl {args:?}"
        );
    }
}

/// Unknown services get a 503 that names the service and lists what exists;
/// a request naming no service gets guidance.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_service_gets_an_actionable_503() {
    let Shared {
        a,
        b,
        backend: api,
        run: _run,
    } = Shared::start("api", "api", "2.0.1").await;

    let r = get(b.proxy, "billing.localhost", "/").await;
    assert_eq!(r.status, 503);
    let text = r.text();
    assert!(
        text.contains("no provider for service \"billing\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("api@2.0.1 on {}", a.peer_id)),
        "{text}"
    );
    assert!(text.contains("devmesh run billing --port"), "{text}");

    let r = request(
        b.proxy,
        "GET",
        "billing.localhost",
        "/",
        Bytes::new(),
        &[("accept", "application/json")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "no_provider");
    assert_eq!(v["known"][0]["service"], "api");

    let r = get(b.proxy, &b.proxy.to_string(), "/").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("names no service"), "{}", r.text());

    // A registered service whose backend is down gets a 502 that says so.
    drop(api);
    let r = get(a.proxy, "api.localhost", "/hello").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("unreachable"), "{}", r.text());
    let r = get(b.proxy, "api.localhost", "/hello").await;
    assert_eq!(r.status, 502, "{}", r.text());
}

/// The same tunnel over QUIC instead of TCP.
#[tokio::test(flavor = "multi_thread")]
async fn tunnel_over_quic() {
    let quic = ["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"];
    let (a, b) = tokio::join!(Daemon::start_with(&quic), Daemon::start_with(&quic));
    assert!(a.p2p_addr.contains("/quic-v1/"), "{}", a.p2p_addr);
    b.join(&a).await;
    let api = Backend::start("over-quic").await;
    let _run = a.run_service("api", api.port(), "1.0.0").await;
    b.wait_for_service("api", |_| true).await;
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.text(), "over-quic");
    let body = Bytes::from(vec![1u8; 2_000_000]);
    let r = request(b.proxy, "POST", "api.localhost", "/echo", body.clone(), &[]).await;
    assert_eq!(r.body, body);
    let peers = b.peers().await;
    assert!(
        peers[0]["addresses"][0]
            .as_str()
            .unwrap()
            .contains("/quic-v1"),
        "{peers}"
    );
}

/// A burst of new connections opens many tunnel streams at once; every
/// request still succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn burst_of_new_connections_all_succeed() {
    let Shared {
        a: _a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "burst", "1.0.0").await;
    for _ in 0..3 {
        let requests = (0..64).map(|_| get(b.proxy, "api.localhost", "/name"));
        for r in futures::future::join_all(requests).await {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), "burst");
        }
    }
}
