//! The node's site: the live dashboard in a real headless Chromium
//! (Debian's `chromium` + `chromedriver`, driven with fantoccini),
//! `devmesh graph` over two nodes, and `devmesh dashboard`.

use std::time::{Duration, Instant};

use devmesh_tests::{Daemon, backend::Backend, browser::Browser, eventually, get};

/// The site's JSON at `path` on `node`'s front door.
async fn site_json(node: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let r = get(node.proxy, "devmesh.localhost", path).await;
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status.as_u16(), v)
}

/// Where CI collects artifacts: `target/artifacts` beside the test binary's
/// profile directory.
fn artifacts() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-xxxx -> target
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// B's dashboard in Chromium: it loads without errors, shows A as a
/// direct peer, shows a service A registers afterwards without a reload,
/// shows the rates of requests made with curl, lists them in the
/// inspector (once the inspector's API answers) and replays one; a
/// screenshot goes to target/artifacts/dashboard.png.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_live_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let url = format!("http://devmesh.localhost:{}/", b.proxy.port());
    browser.client.goto(&url).await.unwrap();
    browser
        .wait_for(
            "the first state",
            "return Number(document.body.dataset.updates || 0) >= 1",
        )
        .await;
    let short = &a.peer_id[a.peer_id.len() - 8..];
    let peers = browser
        .wait_for(
            "A in the peers table",
            &format!("const t = document.querySelector('#peers tbody').innerText; return t.includes('{short}') && t.includes('direct') ? t : null"),
        )
        .await;
    println!("peers table: {peers}");

    // A service registered on A appears without a reload.
    let backend = Backend::start("web-a").await;
    let _run = a.run_service("web2", backend.port(), "2.1.0").await;
    let registered = Instant::now();
    browser
        .wait_for(
            "web2 on the page",
            "return document.querySelector('#services tbody').innerText.includes('web2') || null",
        )
        .await;
    let shown = registered.elapsed();
    println!("web2 shown {shown:?} after devmesh run returned on A");
    assert!(shown < Duration::from_secs(10), "{shown:?}");
    let graph_text = browser
        .eval("return document.querySelector('#graph').textContent")
        .await;
    assert!(
        graph_text.as_str().unwrap().contains("web2 2.1.0"),
        "{graph_text}"
    );

    // Requests made with curl: their rate shows, and the inspector lists them.
    for _ in 0..5 {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: web2.localhost",
            ])
            .arg(format!(
                "http://127.0.0.1:{}/hello?from=dash-probe",
                b.proxy.port()
            ))
            .output()
            .await
            .expect("running curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let rate = browser
        .wait_for(
            "web2's rate on the page",
            "const row = document.querySelector('#services tr[data-service=\"web2\"]'); const r = row && row.cells[4].innerText; return r && Number(r) > 0 ? r : null",
        )
        .await;
    println!("web2 req/s on the page: {rate}");
    browser
        .wait_for(
            "the request edge in the graph",
            "return document.querySelector('#graph [data-request=\"web2\"]') !== null || null",
        )
        .await;

    // The inspector is on by default: its pane lists the request made with
    // curl, and the page's Replay button replays it.
    let (inspector, _) = site_json(&b, "/api/requests?limit=5").await;
    assert_eq!(inspector, 200, "the inspector's API on B");
    browser.client.refresh().await.unwrap();
    browser
        .wait_for(
            "the curl request in the inspector",
            "return document.querySelector('#requests tbody').innerText.includes('dash-probe') || null",
        )
        .await;
    browser
        .eval("document.querySelector('#requests tbody button[data-replay]').click(); return true")
        .await;
    let replayed = browser
        .wait_for(
            "the replay's result",
            "const r = document.getElementById('replay-result'); return r.dataset.replayed ? r.innerText : null",
        )
        .await;
    assert!(
        replayed.as_str().unwrap().contains("status 200"),
        "{replayed}"
    );

    let png = browser.client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifacts().join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {} ({} bytes)", path.display(), png.len());

    let errors = browser.eval("return window.devmeshErrors").await;
    assert_eq!(errors, serde_json::json!([]), "errors on the page");
    browser.client.close().await.unwrap();
}

/// `devmesh graph` on B, which calls A's `api`: A as a direct peer with
/// its RTT, `api` with A as provider at its version, and the request edge
/// with its rate and p95; `--dot` is a digraph that Graphviz (when
/// installed) accepts, and the text form names the service.
#[tokio::test(flavor = "multi_thread")]
async fn devmesh_graph_shows_paths_services_and_requests() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.4.2").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;
    for _ in 0..20 {
        assert_eq!(get(b.proxy, "api.localhost", "/name").await.status, 200);
    }
    let graph = eventually(
        Duration::from_secs(20),
        "the request edge in devmesh graph",
        || async {
            let g = b.cli_json(&["graph"]).await;
            let edge = g["requests"]
                .as_array()?
                .iter()
                .find(|e| e["service"] == "api")?;
            (edge["p95_ms"].is_number() && edge["rate"].as_f64()? > 0.0).then_some(g)
        },
    )
    .await;
    println!("{graph:#}");
    assert_eq!(graph["node"], b.peer_id.as_str());
    let path = graph["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == a.peer_id.as_str())
        .expect("a path to A");
    assert_eq!(path["path"], "direct");
    let api = graph["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .expect("api in the graph");
    assert_eq!(api["providers"][0]["peer"], a.peer_id.as_str());
    assert_eq!(api["providers"][0]["version"], "1.4.2");
    let edge = graph["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "api")
        .unwrap();
    assert_eq!(
        (edge["provider"].as_str(), edge["route"].as_str()),
        (Some(a.peer_id.as_str()), Some("direct"))
    );
    assert!(edge["requests"].as_u64().unwrap() >= 1, "{edge}");

    let out = b.cli(&["graph", "--dot"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(
        dot.starts_with("digraph devmesh {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    let me = format!("\"peer:{}\" -> \"service:api\"", b.peer_id);
    assert!(dot.contains(&me), "the request edge: {dot}");
    let provider = format!("\"service:api\" -> \"peer:{}\"", a.peer_id);
    assert!(dot.contains(&provider), "the provider edge: {dot}");
    if let Ok(mut child) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dot refused it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = b.cli(&["graph"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("api (http)") && text.contains("1.4.2"),
        "{text}"
    );
    let both = b.cli(&["graph", "--json", "--dot"]).await;
    assert_eq!(both.status.code(), Some(2), "--json and --dot conflict");
}

/// `devmesh dashboard --print` prints the URL; without it, `$BROWSER` is
/// started with it; a browser that fails is an error saying what to do.
#[tokio::test(flavor = "multi_thread")]
async fn devmesh_dashboard_prints_and_opens_the_url() {
    let node = Daemon::start().await;
    let url = format!("http://devmesh.localhost:{}/", node.proxy.port());
    let out = node.cli(&["dashboard", "--print"]).await;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);

    let dir = tempfile::tempdir().unwrap();
    let opened = dir.path().join("opened");
    let script = dir.path().join("browser.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > {}\n", opened.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = node
        .devmesh()
        .arg("dashboard")
        .env("BROWSER", &script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = eventually(
        Duration::from_secs(10),
        "the browser script to run",
        || async { std::fs::read_to_string(&opened).ok() },
    )
    .await;
    assert_eq!(got.trim(), url);

    let out = node
        .devmesh()
        .arg("dashboard")
        .env("BROWSER", "false")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open http://devmesh.localhost") && err.contains("BROWSER"),
        "{err}"
    );

    // The site answers with metrics off too, without rates.
    let off = Daemon::start_with(&["--metrics", "off"]).await;
    let (status, state) = site_json(&off, "/api/state").await;
    assert_eq!(
        (status, &state["metrics"]),
        (200, &serde_json::json!(false))
    );
}
