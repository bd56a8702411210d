use std::time::{Duration, Instant};

use devmesh_tests::{Daemon, Shared, backend::Backend, eventually, get};
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
