use std::time::{Duration, Instant};

use devmesh_tests::{
    Daemon, SHORT, Shared,
    backend::{Backend, drip_body, drip_line},
    eventually, get,
};
use nix::sys::signal::Signal;

async fn wait_for_503(b: &Daemon, host: &str, bound: Duration) -> Duration {
    let start = Instant::now();
    eventually(bound, "the proxy to stop routing", || async {
        (get(b.proxy, host, "/hello").await.status == 503).then_some(())
    })
    .await;
    start.elapsed()
}

/// Ctrl-C on `devmesh run`: the remote node stops routing within 1 s.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_of_run_withdraws_within_a_second() {
    let Shared {
        a: _a,
        b,
        backend: _api,
        mut run,
    } = Shared::start("api", "api", "1.4.2").await;
    assert_eq!(get(b.proxy, "api.localhost", "/hello").await.status, 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id().unwrap() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let took = wait_for_503(&b, "api.localhost", Duration::from_secs(1)).await;
    let status = run.wait().await.unwrap();
    assert!(status.success(), "devmesh run exited with {status}");
    eprintln!("graceful withdrawal seen remotely after {took:?}");

    let r = get(b.proxy, "api.localhost", "/hello").await;
    assert!(
        r.text().contains("no provider for service \"api\""),
        "{}",
        r.text()
    );
}

/// `devmesh run` killed with SIGKILL: its registration ends with its
/// control connection, and the remote node stops routing within 1 s.
#[tokio::test(flavor = "multi_thread")]
async fn killed_run_withdraws_within_a_second() {
    let Shared {
        a,
        b,
        backend: api,
        mut run,
    } = Shared::start("api", "api", "1.4.2").await;
    run.start_kill().unwrap();
    wait_for_503(&b, "api.localhost", Duration::from_secs(1)).await;
    // The detached form survives the CLI and is stopped with `devmesh stop`.
    a.share_detached("api", api.port(), "1.4.3").await;
    b.wait_for_service("api", |s| s["version"] == "1.4.3").await;
    assert_eq!(get(b.proxy, "api.localhost", "/hello").await.status, 200);
    let out = a.cli(&["stop", "api"]).await;
    assert!(out.status.success());
    wait_for_503(&b, "api.localhost", Duration::from_secs(1)).await;
}

/// The provider's daemon is killed with SIGKILL: its records are gone
/// within the record TTL (15 s at most), and the 503 says what is known.
#[tokio::test(flavor = "multi_thread")]
async fn killed_daemon_records_expire() {
    let (mut a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let api = Backend::start("api").await;
    let web = Backend::start("web").await;
    let _run = a.run_service("api", api.port(), "1.4.2").await;
    let _web = c.run_service("web", web.port(), "0.9.0").await;
    b.wait_for_service("api", |_| true).await;
    b.wait_for_service("web", |_| true).await;

    a.signal(Signal::SIGKILL);
    let took = wait_for_503(&b, "api.localhost", Duration::from_secs(15)).await;
    eprintln!("records of the killed node gone after {took:?}");
    let r = get(b.proxy, "api.localhost", "/hello").await;
    let text = r.text();
    assert!(text.contains("no provider for service \"api\""), "{text}");
    assert!(text.contains("web@0.9.0"), "{text}");
    let _ = a.wait_exit().await;
}

/// SIGTERM: the daemon withdraws its services, removes its socket and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_cleanly() {
    let (mut a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let api = Backend::start("api").await;
    a.share_detached("api", api.port(), "0.0.0").await;
    b.wait_for_service("api", |_| true).await;
    a.signal(Signal::SIGTERM);
    let status = a.wait_exit().await;
    assert!(status.success(), "devmeshd exited with {status}");
    assert!(!a.home.path().join("devmeshd.sock").exists());
    wait_for_503(&b, "api.localhost", Duration::from_secs(1)).await;
    assert!(a.log().contains("withdrawing services"), "{}", a.log());
}

/// A GET on a raw keep-alive connection whose response arrives slowly; the
/// test reads its head and first bytes, then the rest.
struct SlowGet {
    tcp: tokio::net::TcpStream,
    got: Vec<u8>,
}

impl SlowGet {
    /// Sends the request and waits until the first body line arrived.
    async fn start(proxy: std::net::SocketAddr, host: &str, path: &str) -> SlowGet {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let first = drip_line(1);
        tokio::time::timeout(SHORT, async {
            while !String::from_utf8_lossy(&got).contains(&first) {
                let mut buf = [0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed before the first body line");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the first body line");
        SlowGet { tcp, got }
    }

    /// Reads the rest of the response (by its `Content-Length`) and
    /// returns the status line and the body; with `then_closed`, also
    /// waits for the server to close the keep-alive connection, as a
    /// front door that shuts down does once its response is done. A
    /// response cut short ends at the close.
    async fn finish(mut self, then_closed: bool) -> (String, String) {
        use tokio::io::AsyncReadExt as _;
        let split = |got: &[u8]| {
            let text = String::from_utf8_lossy(got).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            (
                head.lines().next().unwrap_or("").to_owned(),
                body.to_owned(),
                length,
            )
        };
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                let (_, body, length) = split(&self.got);
                if !then_closed && length.is_some_and(|l| body.len() >= l) {
                    return;
                }
                match self.tcp.read(&mut buf).await {
                    Ok(n @ 1..) => self.got.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the response to end");
        let (status, body, _) = split(&self.got);
        (status, body)
    }
}

/// SIGTERM with requests in flight: the daemon refuses new connections at
/// once, lets a slow request on its front door and a slow tunnel it
/// provides finish with their full bodies, then withdraws its services and
/// exits 0, well before the grace period ends.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight() {
    let (mut a, b) = tokio::join!(
        Daemon::start_with(&["--shutdown-grace", "30s"]),
        Daemon::start()
    );
    b.join(&a).await;
    let api = Backend::start("api").await;
    a.share_detached("api", api.port(), "1.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;

    // 16 lines, 200 ms apart: 3 s each.
    let path = "/drip/16/200";
    let (local, remote) = tokio::join!(
        SlowGet::start(a.proxy, "api.localhost", path),
        SlowGet::start(b.proxy, "api.localhost", path)
    );
    let sent = Instant::now();
    a.signal(Signal::SIGTERM);
    eventually(
        SHORT,
        "A's front door to refuse new connections",
        || async {
            tokio::net::TcpStream::connect(a.proxy)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let refused = sent.elapsed();
    assert!(
        refused < Duration::from_secs(2),
        "new connections refused only after {refused:?}, when the requests were nearly done"
    );

    let ((local_status, local_body), (remote_status, remote_body)) =
        tokio::join!(local.finish(true), remote.finish(false));
    assert!(local_status.contains("200"), "{local_status}");
    assert_eq!(local_body, drip_body(16), "local route body");
    assert!(remote_status.contains("200"), "{remote_status}");
    assert_eq!(remote_body, drip_body(16), "remote route body");

    let status = a.wait_exit().await;
    let took = sent.elapsed();
    assert!(status.success(), "devmeshd exited with {status}");
    assert!(
        took < Duration::from_secs(15),
        "devmeshd took {took:?} to exit: it waited for more than the requests in flight"
    );
    assert!(a.log().contains("withdrawing services"), "{}", a.log());
    wait_for_503(&b, "api.localhost", Duration::from_secs(2)).await;
    eprintln!("refused new connections after {refused:?}, exited after {took:?}");
}

/// SIGTERM with a request that outlasts the grace period: it is cut when
/// the grace (`--shutdown-grace 1s`) ends and the daemon exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_what_outlasts_the_grace() {
    let mut a = Daemon::start_with(&["--shutdown-grace", "1s"]).await;
    let api = Backend::start("api").await;
    a.share_detached("api", api.port(), "1.0.0").await;
    // 100 lines, 200 ms apart: 20 s.
    let slow = SlowGet::start(a.proxy, "api.localhost", "/drip/100/200").await;
    let sent = Instant::now();
    a.signal(Signal::SIGTERM);
    let status = a.wait_exit().await;
    let took = sent.elapsed();
    assert!(status.success(), "devmeshd exited with {status}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "devmeshd exited {took:?} after SIGTERM with a 1 s grace"
    );
    let (_, body) = slow.finish(true).await;
    assert!(
        body.len() < drip_body(100).len(),
        "the request outlasting the grace was not cut"
    );
}
