//! The front door's bounds: a connection limit that answers 503 with what
//! to do, and clients that send nothing or never finish a request's head
//! closed instead of held for ever.

use std::time::{Duration, Instant};

use devmesh_tests::Daemon;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// One request on a new connection; what came back until the server
/// closed it (empty when it closed without answering).
async fn exchange(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the server closes `tcp`; how long that took.
async fn closed_after(mut tcp: TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while tcp.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(read.is_ok(), "the front door held the connection for 60 s");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_door_bounds_its_connections() {
    let a = Daemon::start_with(&["--max-connections", "3"]).await;
    // Three clients hold every slot: two that send nothing, one that
    // never finishes its request's head.
    let silent = [
        TcpStream::connect(a.proxy).await.unwrap(),
        TcpStream::connect(a.proxy).await.unwrap(),
    ];
    let mut slow = TcpStream::connect(a.proxy).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: api.loc")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = exchange(a.proxy).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(refused.contains("at most 3 connections"), "{refused}");
    assert!(refused.contains("--max-connections"), "{refused}");
    assert!(a.log().contains("at its connection limit"), "{}", a.log());

    // The front door closes all three by itself, and serves again.
    let [one, two] = silent;
    let waited = tokio::join!(closed_after(one), closed_after(two), closed_after(slow));
    for took in [waited.0, waited.1, waited.2] {
        assert!(took < Duration::from_secs(40), "{took:?}");
    }
    eprintln!("idle and slow clients closed after {waited:?}");
    let served = exchange(a.proxy).await;
    assert!(served.starts_with("HTTP/1.1 503"), "{served}");
    assert!(!served.contains("at most 3 connections"), "{served}");
    assert!(served.contains("nothing"), "{served}");
}

/// Started with a soft open-files limit of 256, devmeshd raises it to the
/// hard one, so its connection limit answers before descriptors run out.
#[tokio::test(flavor = "multi_thread")]
async fn devmeshd_raises_its_open_files_limit() {
    let home = tempfile::tempdir().unwrap();
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let mut daemon = tokio::process::Command::new("prlimit")
        .arg(format!("--nofile=256:{hard}"))
        .arg(devmesh_tests::bin("devmeshd"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--proxy", "127.0.0.1:0"])
        .args(["--mdns", "false", "--namespace", "test", "--open"])
        .env("DEVMESH_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs devmeshd");
    let pid = daemon.id().unwrap();
    let soft = devmesh_tests::eventually(Duration::from_secs(20), "devmeshd's limits", || async {
        // prlimit execs devmeshd: the pid is the daemon's once it runs.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        if !exe.ends_with("devmeshd") || !home.path().join("devmeshd.sock").exists() {
            return None;
        }
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    })
    .await;
    assert_eq!(soft, hard, "the soft limit of open files");
    let _ = daemon.start_kill();
}

/// A client that starts a request body and stops sending it is answered
/// and closed after the body timeout, not held for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_in_a_request_body_is_cut_off() {
    let a = Daemon::start().await;
    let backend = devmesh_tests::backend::Backend::start("api").await;
    let _run = a.run_service("api", backend.port(), "1.0.0").await;
    let mut tcp = TcpStream::connect(a.proxy).await.unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 1000\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(90), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "held for 90 s");
    let took = started.elapsed();
    let reply = String::from_utf8_lossy(&out);
    eprintln!("stalled body ended after {took:?}: {reply:?}");
    assert!(
        took >= Duration::from_secs(25) && took < Duration::from_secs(60),
        "{took:?} {reply}"
    );
    assert!(
        reply.contains("nothing of the request body for 30 s"),
        "{reply}"
    );
}
