//! Health checks: the provider checks its backend, announces the result,
//! consumers show it and route around unhealthy providers.

use std::time::Duration;

use devmesh_tests::{Daemon, SHORT, backend::Backend, eventually, get, request};

const FAST: &[&str] = &["--health", "/healthz", "--health-interval", "200ms"];

/// A's backend turns unhealthy and healthy again; B sees each flip in
/// `status`, gets a 503 naming A while A is unhealthy, and is served again
/// afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn flips_are_announced_and_routed() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let api = Backend::start("api-a").await;
    let _run = a.run_service_with("api", api.port(), "1.0.0", FAST).await;

    let took = b.wait_for_health("api", &a.peer_id, "healthy").await;
    eprintln!("B saw api healthy {took:?} after `devmesh run`");
    assert_eq!(
        a.health_of("api", &a.peer_id).await.as_deref(),
        Some("healthy")
    );
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "api-a"));

    api.set_health(500);
    let took = b.wait_for_health("api", &a.peer_id, "unhealthy").await;
    eprintln!("B saw api unhealthy {took:?} after /healthz turned 500");
    // A shows why, B the announced value.
    let status = a.status().await;
    let local = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert_eq!(local["health"], "unhealthy");
    assert!(
        local["health_failure"]
            .as_str()
            .unwrap()
            .contains("GET /healthz: 500 Internal Server Error"),
        "{local}"
    );
    let table = a.cli(&["status"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("HEALTH") && table.contains("unhealthy"),
        "{table}"
    );
    assert!(
        table.contains("api: last failed health check: GET /healthz: 500"),
        "{table}"
    );

    for proxy in [b.proxy, a.proxy] {
        let r = get(proxy, "api.localhost", "/name").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(
            r.text()
                .contains("every provider of service \"api\" fails its health check"),
            "{}",
            r.text()
        );
        assert!(r.text().contains(&a.peer_id), "{}", r.text());
    }
    let r = request(
        b.proxy,
        "GET",
        "api.localhost",
        "/name",
        bytes::Bytes::new(),
        &[("accept", "application/json")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "all_providers_unhealthy");
    assert_eq!(v["providers"][0]["provider"], a.peer_id.as_str());
    assert!(
        a.log()
            .contains("service is now unhealthy: GET /healthz: 500")
    );

    api.set_health(204);
    let took = b.wait_for_health("api", &a.peer_id, "healthy").await;
    eprintln!("B saw api healthy again {took:?} after /healthz turned 204");
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "api-a"));
    assert!(
        a.log()
            .contains("service is now healthy: GET /healthz: 204 No Content")
    );
}

/// Two providers, one unhealthy: every request goes to the healthy one.
#[tokio::test(flavor = "multi_thread")]
async fn requests_go_to_the_healthy_provider() {
    let (a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let (api_a, api_c) = tokio::join!(Backend::start("api-a"), Backend::start("api-c"));
    let _ra = a.run_service_with("api", api_a.port(), "1.0.0", FAST).await;
    let _rc = c.run_service_with("api", api_c.port(), "1.0.0", FAST).await;
    b.wait_for_health("api", &a.peer_id, "healthy").await;
    b.wait_for_health("api", &c.peer_id, "healthy").await;

    // A's backend breaks, then C's.
    for (broken, broken_peer, healthy_name) in
        [(&api_a, &a.peer_id, "api-c"), (&api_c, &c.peer_id, "api-a")]
    {
        broken.set_health(503);
        b.wait_for_health("api", broken_peer, "unhealthy").await;
        for _ in 0..20 {
            let r = get(b.proxy, "api.localhost", "/name").await;
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, healthy_name));
        }
        broken.set_health(200);
        b.wait_for_health("api", broken_peer, "healthy").await;
    }
    // Both healthy again: both serve.
    let served = eventually(SHORT, "requests to reach a provider", || async {
        let r = get(b.proxy, "api.localhost", "/name").await;
        (r.status == 200).then(|| r.text())
    })
    .await;
    assert!(["api-a", "api-c"].contains(&served.as_str()));
}

/// A `tcp` check: a closed port is unhealthy (with the connect error as the
/// reason), an open one healthy; a service without a check stays unknown.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_checks_and_unchecked_services() {
    let a = Daemon::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let open = Backend::start("open").await;
    let tcp = ["--health", "tcp", "--health-interval", "200ms"];
    let _db = a.run_service_with("db", closed, "1.0.0", &tcp).await;
    let _up = a.run_service_with("up", open.port(), "1.0.0", &tcp).await;
    let _plain = a.run_service("plain", open.port(), "1.0.0").await;
    a.wait_for_health("db", &a.peer_id, "unhealthy").await;
    a.wait_for_health("up", &a.peer_id, "healthy").await;
    let status = a.status().await;
    let db = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap();
    assert!(
        db["health_failure"]
            .as_str()
            .unwrap()
            .starts_with(&format!("TCP connect to port {closed}:")),
        "{db}"
    );
    // Unchecked: unknown, and routable.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a.health_of("plain", &a.peer_id).await.as_deref(),
        Some("unknown")
    );
    assert_eq!(
        get(a.proxy, "plain.localhost", "/name").await.text(),
        "open"
    );
}

/// Bad health flags are usage errors naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn bad_health_flags_are_clear_errors() {
    let a = Daemon::start().await;
    for (args, expect) in [
        (
            &["--health", "healthz"][..],
            "--health: \"healthz\" is not a health check",
        ),
        (
            &["--health", "/h", "--health-interval", "2 parsecs"][..],
            "--health-interval: \"2 parsecs\" is not a duration",
        ),
        (
            &["--health", "/h", "--health-interval", "1ms"][..],
            "--health-interval: 1ms is out of range",
        ),
        (
            &["--health", "/h", "--unhealthy-threshold", "0"][..],
            "--unhealthy-threshold: 0 is out of range",
        ),
        (
            &["--health-timeout", "1s"][..],
            "--health-timeout: needs --health",
        ),
    ] {
        let mut cli = vec!["run", "api", "--port", "3000", "--detach"];
        cli.extend_from_slice(args);
        let out = a.cli(&cli).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    assert!(a.status().await["services"].as_array().unwrap().is_empty());
}

/// A service with `scheme = "https"` is probed over TLS, like the proxy
/// reaches it: healthy while its `/healthz` answers 200 (and routed to, from
/// A and from B), unhealthy with the status as the reason when it answers
/// 500. A plain-HTTP probe of a TLS backend would never pass.
#[tokio::test(flavor = "multi_thread")]
async fn https_backends_are_probed_over_tls() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let api = Backend::start_tls("tls-api").await;
    let mut args = vec!["--scheme", "https"];
    args.extend_from_slice(FAST);
    let _run = a
        .run_service_with("secure", api.port(), "1.0.0", &args)
        .await;

    b.wait_for_health("secure", &a.peer_id, "healthy").await;
    assert_eq!(
        a.health_of("secure", &a.peer_id).await.as_deref(),
        Some("healthy")
    );
    for proxy in [a.proxy, b.proxy] {
        let r = get(proxy, "secure.localhost", "/name").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "tls-api"));
    }

    api.set_health(500);
    a.wait_for_health("secure", &a.peer_id, "unhealthy").await;
    let table = a.cli(&["status"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("secure: last failed health check: GET /healthz: 500 Internal Server Error"),
        "{table}"
    );

    api.set_health(200);
    b.wait_for_health("secure", &a.peer_id, "healthy").await;
    let r = get(b.proxy, "secure.localhost", "/name").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "tls-api"));
}
