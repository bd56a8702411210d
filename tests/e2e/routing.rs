//! Provider choice: version requirements, warn and strict modes, pins,
//! stickiness, spreading, path routes, retries and failover.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use devmesh_tests::{Daemon, backend::Backend, eventually, get, request};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt as _;

/// Waits until `node` lists `count` providers of `service`.
async fn providers(node: &Daemon, service: &str, count: usize) {
    eventually(
        Duration::from_secs(15),
        &format!("{count} providers of {service}"),
        || async {
            let s = node.status().await;
            (s["services"]
                .as_array()?
                .iter()
                .filter(|s| s["name"] == service)
                .count()
                == count)
                .then_some(())
        },
    )
    .await;
}

async fn get_with(node: &Daemon, path: &str, headers: &[(&str, &str)]) -> devmesh_tests::Reply {
    request(
        node.proxy,
        "GET",
        "api.localhost",
        path,
        Bytes::new(),
        headers,
    )
    .await
}

/// Counts which backend answered `n` GETs of `/name`.
async fn tally(node: &Daemon, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get_with(node, "/name", headers).await;
        assert_eq!(r.status, 200, "{}", r.text());
        *seen.entry(r.text()).or_default() += 1;
    }
    seen
}

/// Waits until GETs are served by both providers (equal providers take
/// turns; under load their RTTs can briefly fall in different bands).
async fn both_serve(node: &Daemon, headers: &[(&str, &str)]) {
    eventually(
        Duration::from_secs(15),
        "both providers serving",
        || async { (tally(node, 20, headers).await.len() == 2).then_some(()) },
    )
    .await;
}

fn only(seen: &HashMap<String, usize>, name: &str) -> bool {
    seen.len() == 1 && seen.contains_key(name)
}

async fn cli_ok(node: &Daemon, args: &[&str]) -> String {
    let out = node.cli(args).await;
    assert!(
        out.status.success(),
        "devmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two versions of `api` on A (1.4.2) and C (2.3.0); B chooses by
/// requirement from a header, from `devmesh route`, from `devmesh run
/// --require` and from devmesh.toml; warn and strict modes; conflicts in
/// `status` on every node.
#[tokio::test(flavor = "multi_thread")]
async fn versions_choose_the_provider() {
    let (a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    a.join(&c).await;
    let api_a = Backend::start("api-a").await;
    let api_c = Backend::start("api-c").await;
    let _ra = a.run_service("api", api_a.port(), "1.4.2").await;
    let _rc = c.run_service("api", api_c.port(), "2.3.0").await;
    providers(&b, "api", 2).await;

    // Without a requirement both serve.
    both_serve(&b, &[]).await;
    // Per request.
    let seen = tally(&b, 20, &[("x-devmesh-require", "^2.1")]).await;
    assert!(only(&seen, "api-c"), "{seen:?}");
    let seen = tally(&b, 20, &[("x-devmesh-require", "~1.4")]).await;
    assert!(only(&seen, "api-a"), "{seen:?}");
    let r = get_with(&b, "/headers", &[("x-devmesh-require", "^2")]).await;
    assert_eq!(r.header("x-devmesh-service"), "api@2.3.0");
    assert!(
        !r.text().contains("x-devmesh-require"),
        "the requirement header reached the backend: {}",
        r.text()
    );
    // Nothing fits: warn mode serves with a warning, strict mode refuses.
    let r = get_with(&b, "/name", &[("x-devmesh-require", "^3")]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-devmesh-warning")
            .contains("no provider of api satisfies ^3"),
        "{:?}",
        r.headers
    );
    let r = get_with(
        &b,
        "/name",
        &[
            ("x-devmesh-require", "^3"),
            ("x-devmesh-versions", "strict"),
        ],
    )
    .await;
    assert_eq!(r.status, 409);
    let body = r.text();
    for needle in ["^3", "api@1.4.2", "api@2.3.0", &a.peer_id, &c.peer_id] {
        assert!(body.contains(needle), "409 body lacks {needle}: {body}");
    }
    let r = get_with(&b, "/name", &[("x-devmesh-require", "banana")]).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("\"banana\" is not a version requirement"));

    // Per node, with `devmesh route`; strict for the whole node.
    cli_ok(&b, &["route", "api", "--require", "^2"]).await;
    assert!(only(&tally(&b, 10, &[]).await, "api-c"));
    cli_ok(&b, &["route", "api", "--require", ">=5"]).await;
    let r = get_with(&b, "/name", &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.header("x-devmesh-warning").is_empty());
    cli_ok(&b, &["route", "--versions", "strict"]).await;
    assert_eq!(get_with(&b, "/name", &[]).await.status, 409);
    let shown = b.cli_json(&["route"]).await;
    assert_eq!(shown["versions"], "strict");
    let api = shown["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "api")
        .unwrap()
        .clone();
    assert!(
        api["refusal"]
            .as_str()
            .unwrap()
            .contains("satisfies the requirements"),
        "{api}"
    );
    // The node's requirement shows as a conflict in its status.
    let status = b.status().await;
    let conflicts = status["conflicts"].as_array().unwrap();
    assert!(
        conflicts
            .iter()
            .any(|c| c["consumer"] == "devmesh route on this node" && c["requirement"] == ">=5"),
        "{conflicts:?}"
    );
    cli_ok(&b, &["route", "api", "--clear"]).await;
    cli_ok(&b, &["route", "--versions", "warn"]).await;
    both_serve(&b, &[]).await;

    // From a service this node runs: `devmesh run web --require api=~1.4`.
    let web = Backend::start("web").await;
    let _web = b
        .run_service_with("web", web.port(), "0.0.0", &["--require", "api=~1.4"])
        .await;
    eventually(
        Duration::from_secs(10),
        "web's requirement applies",
        || async { only(&tally(&b, 10, &[]).await, "api-a").then_some(()) },
    )
    .await;
    // From devmesh.toml; and a requirement nobody meets shows as a conflict
    // on the other nodes.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            "[services.admin]\nport = {}\nversion = \"0.3.0\"\n\n[services.admin.requires]\napi = \"^9\"\n",
            web.port()
        ),
    )
    .unwrap();
    let _admin = b
        .devmesh()
        .current_dir(project.path())
        .args(["run", "admin"])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the conflict at A", || async {
        let status = a.status().await;
        status["conflicts"].as_array()?.iter().find_map(|c| {
            (c["consumer"] == format!("admin@0.3.0 on {}", b.peer_id)
                && c["service"] == "api"
                && c["requirement"] == "^9"
                && c["available"].as_array()?.len() == 2)
                .then_some(())
        })
    })
    .await;
    let text = cli_ok(&a, &["status"]).await;
    assert!(
        text.contains(&format!(
            "admin@0.3.0 on {} requires api ^9: there is api@",
            b.peer_id
        )),
        "{text}"
    );
    // Both requirements of B's services apply: nothing satisfies ~1.4 and ^9.
    let r = get_with(&b, "/name", &[]).await;
    assert!(
        r.header("x-devmesh-warning").contains("~1.4"),
        "{:?}",
        r.headers
    );
}

/// Equal providers take turns; a pin sends everything to one; sticky mode
/// keeps a client (by cookie) on one.
#[tokio::test(flavor = "multi_thread")]
async fn pins_stickiness_and_spreading() {
    let (a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let api_a = Backend::start("api-a").await;
    let api_c = Backend::start("api-c").await;
    let _ra = a.run_service("api", api_a.port(), "1.0.0").await;
    let _rc = c.run_service("api", api_c.port(), "1.0.0").await;
    providers(&b, "api", 2).await;

    // Equal RTT bands spread; under load the RTTs can briefly differ.
    eventually(Duration::from_secs(15), "an even spread", || async {
        let seen = tally(&b, 40, &[]).await;
        (seen.len() == 2 && seen.values().all(|n| *n >= 8)).then_some(())
    })
    .await;

    cli_ok(&b, &["route", "api", "--peer", &c.peer_id]).await;
    assert!(only(&tally(&b, 20, &[]).await, "api-c"));
    let shown = b.cli_json(&["route"]).await;
    let api = &shown["services"][0];
    assert_eq!(api["pin"], c.peer_id.as_str());
    assert_eq!(api["order"].as_array().unwrap().len(), 1);
    let stranger = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    cli_ok(&b, &["route", "api", "--peer", stranger]).await;
    let r = get_with(&b, "/name", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("pinned to peer"), "{}", r.text());
    assert!(r.text().contains("devmesh route api --clear"));
    let out = b.cli(&["route", "api", "--peer", "not-a-peer"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a peer id"));
    cli_ok(&b, &["route", "api", "--clear"]).await;
    both_serve(&b, &[]).await;

    cli_ok(&b, &["route", "api", "--sticky"]).await;
    let first = get_with(&b, "/name", &[]).await;
    let cookie = first.header("set-cookie").to_owned();
    assert!(cookie.starts_with("devmesh-api=12D3KooW"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let seen = tally(&b, 20, &[("cookie", &pair)]).await;
    assert!(only(&seen, &first.text()), "{seen:?}");
    // The cookie's holder is not told again.
    let r = get_with(&b, "/name", &[("cookie", &pair)]).await;
    assert_eq!(r.header("set-cookie"), "");
    cli_ok(&b, &["route", "api", "--no-sticky"]).await;
    both_serve(&b, &[("cookie", &pair)]).await;
}

/// Services claim path prefixes: one host name fronts several services.
#[tokio::test(flavor = "multi_thread")]
async fn path_routes_front_several_services() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let web = Backend::start("web").await;
    let api = Backend::start("api").await;
    let _web = a
        .run_service_with("web", web.port(), "0.0.0", &["--route", "/"])
        .await;
    let _api = a
        .run_service_with("api", api.port(), "0.0.0", &["--route", "/api/"])
        .await;
    providers(&b, "api", 1).await;
    providers(&b, "web", 1).await;
    let name = |r: devmesh_tests::Reply| r.header("x-backend-name").to_owned();
    assert_eq!(
        name(get(b.proxy, "app.localhost", "/api/users").await),
        "api"
    );
    assert_eq!(name(get(b.proxy, "app.localhost", "/api").await), "api");
    assert_eq!(
        name(get(b.proxy, "app.localhost", "/index.html").await),
        "web"
    );
    assert_eq!(name(get(b.proxy, "app.localhost", "/apiary").await), "web");
    assert_eq!(name(get(b.proxy, "web.localhost", "/api/x").await), "api");
    assert_eq!(name(get(b.proxy, "api.localhost", "/").await), "api");
    assert_eq!(
        name(get(b.proxy, &format!("localhost:{}", b.proxy.port()), "/api/x").await),
        "api"
    );
    assert_eq!(
        name(get(b.proxy, &format!("127.0.0.1:{}", b.proxy.port()), "/").await),
        "web"
    );
    // The explicit header wins over path routes.
    let r = request(
        b.proxy,
        "GET",
        "app.localhost",
        "/api/x",
        Bytes::new(),
        &[("x-devmesh-service", "web")],
    )
    .await;
    assert_eq!(name(r), "web");
    // The path reaches the backend unchanged.
    let r = get(b.proxy, "app.localhost", "/api/headers").await;
    assert_eq!(r.status, 404, "the test backend has no /api/headers");
    assert_eq!(name(r), "api");
}

/// A backend that takes requests and closes the connection without
/// answering, like a crashing process.
async fn broken_backend() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    (port, task)
}

/// A request that failed before any response byte goes to the next
/// provider when its method allows; the failing provider is ejected.
#[tokio::test(flavor = "multi_thread")]
async fn unanswered_requests_are_retried_by_policy() {
    let (b, c) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&c).await;
    let api_c = Backend::start("api-c").await;
    let _rc = c.run_service("api", api_c.port(), "1.0.0").await;
    let (broken, _task) = broken_backend().await;
    let _rb = b.run_service("api", broken, "1.0.0").await;
    providers(&b, "api", 2).await;

    // The local provider comes first, fails, and the GET goes to C.
    let r = get_with(&b, "/name", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "api-c"));
    assert_eq!(r.header("x-devmesh-attempts"), "2");
    assert_eq!(r.header("x-devmesh-route"), "remote-direct");
    // While ejected, the local provider is tried last.
    let r = get_with(&b, "/name", &[]).await;
    assert_eq!(r.header("x-devmesh-attempts"), "");
    let shown = b.cli_json(&["route", "api"]).await;
    assert!(
        shown["services"][0]["ejected"][0]
            .as_str()
            .unwrap()
            .starts_with(&b.peer_id),
        "{shown}"
    );
    // After the ejection, a POST is not sent twice by default...
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let post = || async {
        request(
            b.proxy,
            "POST",
            "api.localhost",
            "/echo",
            Bytes::from_static(b"payload"),
            &[],
        )
        .await
    };
    let r = post().await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("unreachable"), "{}", r.text());
    // ...but is with `--retry all` (the second failure ejected it for 2 s).
    cli_ok(&b, &["route", "api", "--retry", "all"]).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = post().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "payload");
    assert_eq!(r.header("x-devmesh-attempts"), "2");
    // And nothing is with `--retry never`.
    cli_ok(&b, &["route", "api", "--retry", "never"]).await;
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(get_with(&b, "/name", &[]).await.status, 502);
}

/// A loop of GETs runs while one of two providers is killed with SIGKILL:
/// no request fails and none takes 2 s. The clients hold a sticky cookie
/// for the provider that dies, so requests are on their way to it when it
/// does.
#[tokio::test(flavor = "multi_thread")]
async fn failover_when_a_provider_dies() {
    let (mut a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let api_a = Backend::start("api-a").await;
    let api_c = Backend::start("api-c").await;
    let _ra = a.run_service("api", api_a.port(), "1.0.0").await;
    let _rc = c.run_service("api", api_c.port(), "1.0.0").await;
    providers(&b, "api", 2).await;
    cli_ok(&b, &["route", "api", "--sticky"]).await;
    let cookie = format!("devmesh-api={}", a.peer_id);

    let proxy = b.proxy;
    let stop = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                let mut seen = HashMap::<String, usize>::new();
                let mut failures = Vec::new();
                while Instant::now() < stop {
                    let started = Instant::now();
                    let r = request(
                        proxy,
                        "GET",
                        "api.localhost",
                        "/name",
                        Bytes::new(),
                        &[("cookie", &cookie)],
                    )
                    .await;
                    worst = worst.max(started.elapsed());
                    if r.status == 200 {
                        *seen.entry(r.text()).or_default() += 1;
                    } else {
                        failures.push(format!("{} {}", r.status, r.text()));
                    }
                }
                (worst, seen, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.signal(Signal::SIGKILL);
    let _ = a.wait_exit().await;
    let mut worst = Duration::ZERO;
    let mut total = HashMap::<String, usize>::new();
    for client in clients {
        let (w, seen, failures) = client.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        worst = worst.max(w);
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
    }
    assert!(total.get("api-a").copied().unwrap_or(0) > 0, "{total:?}");
    assert!(total.get("api-c").copied().unwrap_or(0) > 0, "{total:?}");
    assert!(worst < Duration::from_secs(2), "slowest request {worst:?}");
    eprintln!("failover: {total:?}, slowest {worst:?}");
}
