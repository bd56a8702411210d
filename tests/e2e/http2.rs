//! HTTP/2 end to end: h2c on the front door, services whose backend speaks
//! HTTP/2 (shared with `--http2`), trailers, a real gRPC client and server,
//! and backends that serve TLS themselves (`--scheme https`).

use std::process::Stdio;

use bytes::Bytes;
use devmesh_tests::{Daemon, H2Client, SHORT, backend::Backend, get, request};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

fn json(r: &devmesh_tests::Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: not JSON: {} {}", r.status, r.text()))
}

/// Two nodes joined, B seeing A's `service` as remote with `h2` as given.
async fn nodes_with(
    service: &str,
    port: u16,
    extra: &[&str],
) -> (Daemon, Daemon, tokio::process::Child) {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let run = a.run_service_with(service, port, "1.0.0", extra).await;
    let h2 = extra.contains(&"--http2");
    b.wait_for_service(service, |s| {
        s["route"] == "remote" && s["h2"].as_bool().unwrap_or(false) == h2
    })
    .await;
    (a, b, run)
}

async fn curl(args: &[String]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(args)
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An h2c backend shared by A with `--http2`; B's front door takes HTTP/2
/// (curl with prior knowledge, hyper) and HTTP/1.1 clients, the backend
/// sees HTTP/2 either way, trailers arrive, and all of B's requests share
/// one HTTP/2 connection through the tunnel.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_front_door_and_h2_backend_through_the_tunnel() {
    let api = Backend::start_h2("h2-api").await;
    let (a, b, _run) = nodes_with("api", api.port(), &["--http2"]).await;
    let port = b.proxy.port();

    // The real curl, HTTP/2 with prior knowledge on the front door.
    let out = curl(&[
        "-sS".into(),
        "--http2-prior-knowledge".into(),
        "-D".into(),
        "-".into(),
        format!("http://api.localhost:{port}/headers?via=curl"),
    ])
    .await;
    let (head, body) = out.split_once("\r\n\r\n").expect("headers and body");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(head.contains("x-devmesh-route: remote-direct"), "{head}");
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert_eq!(
        seen["uri"],
        format!("http://localhost:{}/headers?via=curl", api.port()),
        "the backend's :authority is its own"
    );
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        format!("api.localhost:{port}")
    );
    assert!(seen["headers"].get("host").is_none(), "{seen}");

    // An HTTP/1.1 client to the HTTP/2 backend: translated both ways.
    let r = get(b.proxy, "api.localhost", "/headers").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_11);
    let seen = json(&r);
    assert_eq!(seen["version"], "HTTP/2.0");
    assert!(seen["headers"].get("connection").is_none(), "{seen}");
    assert!(seen["headers"].get("keep-alive").is_none(), "{seen}");

    // Bodies both ways, and trailers, for an HTTP/2 client.
    let h2 = H2Client::connect(b.proxy).await;
    let body = Bytes::from(vec![5u8; 1_000_000]);
    let r = h2
        .request("POST", "api.localhost", "/echo", body.clone(), &[])
        .await;
    assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
    assert_eq!(r.body, body);
    let r = h2
        .request(
            "GET",
            "api.localhost",
            "/trailers",
            Bytes::new(),
            &[("te", "trailers")],
        )
        .await;
    assert_eq!(r.text(), "trailers follow\n");
    assert_eq!(r.trailers.get("x-checksum").unwrap(), "42", "{r:?}");
    assert_eq!(r.trailers.get("x-backend-done").unwrap(), "yes");
    // An HTTP/1.1 client that accepts trailers gets the announced ones in
    // the chunked body.
    let r = request(
        b.proxy,
        "GET",
        "api.localhost",
        "/trailers",
        Bytes::new(),
        &[("te", "trailers")],
    )
    .await;
    assert_eq!(r.text(), "trailers follow\n");
    assert_eq!(r.trailers.get("x-checksum").unwrap(), "42", "{r:?}");

    // Many front-door connections, one HTTP/2 connection to the backend.
    let before = api.connections();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let proxy = b.proxy;
        tasks.push(tokio::spawn(async move {
            let h2 = H2Client::connect(proxy).await;
            for j in 0..5 {
                let r = if (i + j) % 2 == 0 {
                    h2.get("api.localhost", "/name").await
                } else {
                    get(proxy, "api.localhost", "/name").await
                };
                assert_eq!(r.text(), "h2-api");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        api.connections(),
        before,
        "B's requests share the HTTP/2 connection it already had"
    );

    // A WebSocket to an HTTP/2 service goes over HTTP/1.1 (the backend
    // speaks both).
    let mut req = format!("ws://{}/ws", b.proxy)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "api.localhost".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(b.proxy).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("welcome from h2-api")
    );
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));

    // The local route on A speaks HTTP/2 to the backend too.
    let r = H2Client::connect(a.proxy)
        .await
        .get("api.localhost", "/headers")
        .await;
    assert_eq!(r.header("x-devmesh-route"), "local");
    assert_eq!(json(&r)["version"], "HTTP/2.0");
    let r = get(a.proxy, "api.localhost", "/headers").await;
    assert_eq!(json(&r)["version"], "HTTP/2.0");
}

/// HTTP/2 clients of an HTTP/1.1 backend: the front door answers in
/// HTTP/2 and the backend sees HTTP/1.1 with a Host header.
#[tokio::test(flavor = "multi_thread")]
async fn h2_client_to_http1_backend() {
    let api = Backend::start("h1-api").await;
    let (_a, b, _run) = nodes_with("api", api.port(), &[]).await;
    let h2 = H2Client::connect(b.proxy).await;
    let r = h2
        .get(&format!("api.localhost:{}", b.proxy.port()), "/headers")
        .await;
    assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
    let seen = json(&r);
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["uri"], "/headers");
    assert_eq!(seen["headers"]["host"], format!("localhost:{}", api.port()));
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        format!("api.localhost:{}", b.proxy.port())
    );
    // Announced trailers of an HTTP/1.1 backend reach an HTTP/2 client.
    let r = h2
        .request(
            "GET",
            "api.localhost",
            "/trailers",
            Bytes::new(),
            &[("te", "trailers")],
        )
        .await;
    assert_eq!(r.trailers.get("x-checksum").unwrap(), "42", "{r:?}");
    // Pages of the proxy answer HTTP/2 clients too.
    let r = h2.get("billing.localhost", "/").await;
    assert_eq!(r.status, 503);
    let r = h2
        .request(
            "POST",
            "api.localhost",
            "/upload",
            Bytes::from(vec![1u8; 3_000_000]),
            &[],
        )
        .await;
    assert_eq!(json(&r)["bytes"], 3_000_000);
}

/// Whether Python's grpcio is importable; CI installs it, elsewhere the
/// gRPC test skips with the reason.
async fn grpcio() -> bool {
    let ok = tokio::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio is needed (.ci/run installs it: python3 -m pip install grpcio)"
        );
        eprintln!("skipping: python3 with grpcio is not installed (python3 -m pip install grpcio)");
    }
    ok
}

fn grpc_peer() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/grpc_peer.py")
}

/// A real gRPC client (grpcio) on B's front door calls a real gRPC server
/// (grpcio) shared by A with `--http2`: unary and server-streaming calls,
/// and status codes set by the server come back.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_through_the_tunnel() {
    if !grpcio().await {
        return;
    }
    let mut server = tokio::process::Command::new("python3")
        .arg(grpc_peer())
        .arg("server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the gRPC server");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(SHORT, lines.next_line())
        .await
        .expect("gRPC server printed no port")
        .unwrap()
        .expect("gRPC server exited")
        .trim()
        .parse()
        .unwrap();
    let (a, b, _run) = nodes_with("grpc", port, &["--http2"]).await;
    for (proxy, route) in [(b.proxy, "remote"), (a.proxy, "local")] {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            tokio::process::Command::new("python3")
                .arg(grpc_peer())
                .args([
                    "client",
                    &proxy.to_string(),
                    &format!("grpc.localhost:{}", proxy.port()),
                ])
                .env_remove("http_proxy")
                .env_remove("HTTP_PROXY")
                .output(),
        )
        .await
        .expect("gRPC client timed out")
        .unwrap();
        assert!(
            out.status.success(),
            "{route}: gRPC client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["unary"], "echo:hello", "{route}: {v}");
        assert_eq!(v["unary_many"][19], "echo:19", "{route}: {v}");
        assert_eq!(
            v["stream"],
            serde_json::json!(["item-0", "item-1", "item-2", "item-3", "item-4"]),
            "{route}"
        );
        assert_eq!(v["missing"]["code"], "NOT_FOUND", "{route}: {v}");
        assert_eq!(v["missing"]["details"], "no such thing: x", "{route}");
        assert_eq!(v["unimplemented"]["code"], "UNIMPLEMENTED", "{route}: {v}");
    }
}

/// A backend that serves TLS itself, with a self-signed certificate,
/// reached from B with `--scheme https` (HTTP/1.1 and, with `--http2`,
/// HTTP/2 by ALPN), and from `devmesh.toml`; a plain backend shared with
/// `--scheme https` gets a 502 that says what is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn https_backend() {
    let secure = Backend::start_tls("tls-api").await;
    let plain = Backend::start("plain").await;
    let (a, b, _run) = nodes_with("secure", secure.port(), &["--scheme", "https"]).await;
    let _run_h2 = a
        .run_service_with(
            "secure-h2",
            secure.port(),
            "1.0.0",
            &["--scheme", "https", "--http2"],
        )
        .await;
    let _run_wrong = a
        .run_service_with("wrong", plain.port(), "1.0.0", &["--scheme", "https"])
        .await;
    // devmesh.toml says the same with scheme and http2 keys.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            "[services.fromfile]\nport = {}\nscheme = \"https\"\nhttp2 = true\n",
            secure.port()
        ),
    )
    .unwrap();
    let out = a
        .devmesh()
        .current_dir(project.path())
        .args(["run", "fromfile", "--detach"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = a.status().await;
    let fromfile = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "fromfile")
        .unwrap()
        .clone();
    assert_eq!(
        (&fromfile["scheme"], &fromfile["h2"]),
        (&"https".into(), &true.into())
    );
    for service in ["secure-h2", "wrong", "fromfile"] {
        b.wait_for_service(service, |s| s["route"] == "remote")
            .await;
    }

    for (proxy, route) in [(b.proxy, "remote-direct"), (a.proxy, "local")] {
        let r = get(proxy, "secure.localhost", "/headers").await;
        assert_eq!(r.status, 200, "{route}: {}", r.text());
        assert_eq!(r.header("x-devmesh-route"), route);
        let seen = json(&r);
        assert_eq!(
            (&seen["tls"], &seen["version"]),
            (&true.into(), &"HTTP/1.1".into())
        );
        assert_eq!(
            seen["headers"]["host"],
            format!("localhost:{}", secure.port())
        );

        for service in ["secure-h2", "fromfile"] {
            let r = get(proxy, &format!("{service}.localhost"), "/headers").await;
            assert_eq!(r.status, 200, "{route} {service}: {}", r.text());
            let seen = json(&r);
            assert_eq!(
                (&seen["tls"], &seen["version"]),
                (&true.into(), &"HTTP/2.0".into())
            );
            assert_eq!(
                seen["uri"],
                format!("https://localhost:{}/headers", secure.port()),
                "{route} {service}: :scheme https"
            );
        }
        let body = Bytes::from(vec![9u8; 500_000]);
        let r = request(
            proxy,
            "POST",
            "secure-h2.localhost",
            "/echo",
            body.clone(),
            &[],
        )
        .await;
        assert_eq!(r.body, body, "{route}");

        let r = get(proxy, "wrong.localhost", "/hello").await;
        assert_eq!(r.status, 502, "{route}");
        assert!(r.text().contains("TLS handshake"), "{route}: {}", r.text());
    }
    // curl with HTTP/2 on the front door, TLS + HTTP/2 behind A.
    let out = curl(&[
        "-sS".into(),
        "--http2-prior-knowledge".into(),
        format!("http://secure-h2.localhost:{}/hello", b.proxy.port()),
    ])
    .await;
    assert_eq!(out, "hello from tls-api\n");
}
