//! HTTPS on the front door: `devmesh cert install`, certificates per server
//! name from the node's CA, HTTP/2 by ALPN, plain HTTP on the same port.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Output};

use devmesh_tests::{SHORT, Shared, bin, eventually, get};

/// `devmesh cert install <args>` for the node in `home`, with the system
/// store redirected into `store` and the user's home (NSS databases) in
/// `user_home`: nothing outside the test's temp dirs is touched.
async fn cert_install(home: &Path, store: &Path, marker: &Path, args: &[&str]) -> Output {
    let user_home = store.parent().unwrap().join("user-home");
    std::fs::create_dir_all(&user_home).unwrap();
    let run = tokio::process::Command::new(bin("devmesh"))
        .env("DEVMESH_HOME", home)
        .env("HOME", &user_home)
        .env("DEVMESH_CA_STORE_DIR", store)
        .env(
            "DEVMESH_UPDATE_CA_COMMAND",
            format!("touch {}", marker.display()),
        )
        .args(["cert", "install"])
        .args(args)
        .output();
    tokio::time::timeout(SHORT, run)
        .await
        .expect("devmesh cert install timed out")
        .expect("running devmesh")
}

async fn curl(args: &[&str]) -> Output {
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output();
    tokio::time::timeout(SHORT * 2, run)
        .await
        .expect("curl timed out")
        .expect("running curl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn cert_install_makes_the_ca_once_and_trusts_it_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("node");
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let marker = tmp.path().join("store-updated");

    // Without --yes: the CA is made and the instructions printed, nothing installed.
    let out = cert_install(&home, &store, &marker, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let ca = home.join("ca/ca.pem");
    let key = home.join("ca/ca-key.pem");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&home.join("ca")), 0o700);
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(stdout.contains("(new)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "sudo cp {} {}/devmesh-",
            ca.display(),
            store.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "curl --cacert {} https://api.localhost:7700/",
            ca.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("devmeshd is not running"), "{stdout}");
    assert!(stdout.contains("certutil -d sql:"), "{stdout}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    assert!(!marker.exists());

    // With --yes: the same CA goes into the store and the update command runs.
    let out = cert_install(&home, &store, &marker, &["--yes", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["created"], false);
    let id = v["id"].as_str().unwrap();
    assert_eq!(id.len(), 8);
    assert_eq!(v["installed"][0]["ok"], true, "{v}");
    let installed = store.join(format!("devmesh-{id}.crt"));
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), pem);
    assert!(marker.exists(), "the store update command did not run");
    assert_eq!(
        std::fs::read_to_string(&ca).unwrap(),
        pem,
        "the CA was remade"
    );

    // A failing store update is reported and fails the command.
    let bad_store = tmp.path().join("missing-store");
    let out = cert_install(&home, &bad_store, &marker, &["--yes"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAILED"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("could not trust the CA"),
        "{}",
        text(&out.stderr)
    );

    // A key other users can read is refused with what to do.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cert_install(&home, &store, &marker, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains("other users can read it"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_on_the_front_door_port_with_verified_certificates_and_h2() {
    let Shared {
        a: _a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "api-on-a", "1.0.0").await;
    let port = b.proxy.port();
    let url = |host: &str, path: &str| format!("https://{host}:{port}{path}");

    // Before `devmesh cert install` the handshake fails, and the log says
    // what to run; plain HTTP works.
    let out = curl(&["-k", &url("api.localhost", "/hello")]).await;
    assert!(!out.status.success(), "HTTPS worked without a CA");
    eventually(SHORT, "the no-CA hint in B's log", || async {
        b.log().contains("run `devmesh cert install`").then_some(())
    })
    .await;
    assert_eq!(get(b.proxy, "api.localhost", "/hello").await.status, 200);

    // Make B's CA while B runs: the next handshake uses it.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let out = cert_install(b.home.path(), &store, &tmp.path().join("m"), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ca = b.home.path().join("ca/ca.pem");
    let ca = ca.to_str().unwrap();
    // The curl line it suggests uses the port of B's front door.
    let suggested = format!("curl --cacert {ca} https://api.localhost:{port}/");
    assert!(
        text(&out.stdout).contains(&suggested),
        "{}",
        text(&out.stdout)
    );

    // Verification on, HTTP/1.1, to the backend on A through the tunnel.
    let out = curl(&[
        "--cacert",
        ca,
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &url("api.localhost", "/hello"),
    ])
    .await;
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from api-on-a\n\n1.1");

    // HTTP/2 by ALPN, on both name forms; the backend sees https.
    for host in ["api.localhost", "api.devmesh"] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let out = curl(&[
            "--cacert",
            ca,
            "--http2",
            "--resolve",
            &resolve,
            "-D",
            "-",
            "-w",
            "\n%{http_version}",
            &url(host, "/headers"),
        ])
        .await;
        assert!(out.status.success(), "curl {host}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("HTTP/2 200"), "{stdout}");
        assert!(
            stdout.contains("x-devmesh-route: remote-direct"),
            "{stdout}"
        );
        let (rest, version) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(version, "2");
        let body = &rest[rest.find("\r\n\r\n").unwrap() + 4..];
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            seen["headers"]["x-forwarded-host"],
            format!("{host}:{port}")
        );
    }

    // A WebSocket inside TLS (wss), upgraded through both hops.
    {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_rustls::rustls::{self, pki_types::pem::PemObject as _};
        use tokio_tungstenite::tungstenite::Message;
        let der = rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(b.proxy).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect("api.localhost".try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake with the front door");
        let (mut ws, resp) = tokio_tungstenite::client_async(
            url("api.localhost", "/ws").replace("https", "wss"),
            tls,
        )
        .await
        .expect("wss handshake");
        assert_eq!(resp.status(), 101);
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("welcome from api-on-a")
        );
        ws.send(Message::text("over tls")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
        ws.close(None).await.unwrap();
    }

    // A POST body through HTTP/2 arrives whole.
    let body = "x".repeat(200_000);
    let body_file = tmp.path().join("body");
    std::fs::write(&body_file, &body).unwrap();
    let out = curl(&[
        "--cacert",
        ca,
        "--http2",
        "--data-binary",
        &format!("@{}", body_file.display()),
        &url("api.localhost", "/echo"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), body);

    // Without the CA, curl refuses the certificate and B logs a hint.
    let out = curl(&[&url("api.localhost", "/hello")]).await;
    assert_eq!(out.status.code(), Some(60), "{}", text(&out.stderr));
    eventually(SHORT, "the untrusted-CA hint in B's log", || async {
        b.log()
            .contains("does not trust this node's CA")
            .then_some(())
    })
    .await;

    // A name outside localhost/devmesh gets no certificate.
    let resolve = format!("example.com:{port}:127.0.0.1");
    let out = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &url("example.com", "/hello"),
    ])
    .await;
    assert!(!out.status.success(), "example.com got a certificate");
    eventually(SHORT, "the refused name in B's log", || async {
        let log = b.log();
        log.lines()
            .any(|l| l.contains("refused a TLS handshake") && l.contains("example.com"))
            .then_some(())
    })
    .await;

    // Plain HTTP on the same port, still.
    let r = get(b.proxy, "api.localhost", "/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from api-on-a\n");
    let out = curl(&[
        "-w",
        "\n%{http_version}",
        &format!("http://api.localhost:{port}/hello"),
    ])
    .await;
    assert_eq!(text(&out.stdout), "hello from api-on-a\n\n1.1");
}
