//! Prometheus metrics: a real Prometheus (Debian's `prometheus`) scrapes
//! two nodes, one through the front door's `devmesh.localhost/metrics`
//! (as an HTTP proxy, with an absolute-form URI) and one on `--metrics`,
//! and the test reads the values back through Prometheus's query API.

use std::{process::Stdio, time::Duration};

use devmesh_tests::{Daemon, backend::Backend, eventually, get};

/// A free loopback port (closed again: the process given it binds it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Whether Debian's `prometheus` is installed; CI installs it, elsewhere
/// the test skips with the reason.
fn have_prometheus() -> bool {
    let ok = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is needed (.ci/run installs it: apt-get install prometheus)"
        );
        eprintln!("skipping: prometheus is not installed (apt-get install prometheus)");
    }
    ok
}

/// A Prometheus server scraping the given jobs every second.
struct Prometheus {
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus with `jobs` (YAML of `scrape_configs` entries)
    /// and waits until it is ready.
    async fn start(jobs: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting prometheus");
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually(
            Duration::from_secs(30),
            "prometheus to be ready",
            || async move {
                // `get` fails the test on a refused connection: listen first.
                tokio::net::TcpStream::connect(addr).await.ok()?;
                let r = get(addr, "127.0.0.1", "/-/ready").await;
                (r.status == 200).then_some(())
            },
        )
        .await;
        Prometheus {
            _dir: dir,
            _child: child,
            port,
        }
    }

    /// The value of the one series `query` selects, once it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let path = format!("/api/v1/query?query={}", encode(query));
        let r = get(addr, "127.0.0.1", &path).await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` gives one series whose value satisfies `want`.
    async fn wait_for(&self, query: &str, want: impl Fn(f64) -> bool) -> f64 {
        eventually(Duration::from_secs(30), query, || async {
            self.value(query).await.filter(|v| want(*v))
        })
        .await
    }
}

/// Percent-encodes a PromQL query for a URL query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A shares `api`, B calls it ten times and once for a service nobody
/// has; Prometheus scrapes B through its front door and A on `--metrics`,
/// and reads back B's requests by service, route and provider, the tunnel
/// streams and bytes on both ends, peers by kind, services and gossip.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_request_tunnel_and_mesh_metrics() {
    if !have_prometheus() {
        return;
    }
    let metrics_port = free_port();
    let metrics_flag = format!("127.0.0.1:{metrics_port}");
    let a_args = ["--metrics", metrics_flag.as_str()];
    let (a, b) = tokio::join!(Daemon::start_with(&a_args), Daemon::start());
    b.join(&a).await;
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.4.2").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;
    for _ in 0..10 {
        let r = get(b.proxy, "api.localhost", "/name").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(get(b.proxy, "nothing.localhost", "/").await.status, 503);

    let front_door = b.proxy.port();
    let prometheus = Prometheus::start(&format!(
        "  - job_name: b\n    proxy_url: http://127.0.0.1:{front_door}\n    static_configs:\n      - targets: ['devmesh.localhost:{front_door}']\n  - job_name: a\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    ))
    .await;

    let served = format!(
        r#"devmesh_requests_total{{job="b",service="api",method="GET",code="200",route="direct",provider="{}"}}"#,
        a.peer_id
    );
    assert_eq!(prometheus.wait_for(&served, |v| v >= 10.0).await, 10.0);
    let count = served.replace("requests_total", "request_duration_seconds_count");
    assert_eq!(prometheus.wait_for(&count, |v| v >= 10.0).await, 10.0);
    let unknown = r#"devmesh_requests_total{job="b",service="unknown",code="503",route="none"}"#;
    assert_eq!(prometheus.wait_for(unknown, |v| v >= 1.0).await, 1.0);

    let outbound = format!(
        r#"devmesh_tunnel_streams_total{{job="b",peer="{}",direction="outbound"}}"#,
        a.peer_id
    );
    prometheus.wait_for(&outbound, |v| v >= 1.0).await;
    let inbound = format!(
        r#"devmesh_tunnel_streams_total{{job="a",peer="{}",direction="inbound"}}"#,
        b.peer_id
    );
    prometheus.wait_for(&inbound, |v| v >= 1.0).await;
    // Ten responses of "api-a" with their heads went from A to B.
    let received = format!(
        r#"devmesh_tunnel_bytes_total{{job="b",peer="{}",direction="received"}}"#,
        a.peer_id
    );
    let got = prometheus.wait_for(&received, |v| v > 0.0).await;
    let sent = format!(
        r#"devmesh_tunnel_bytes_total{{job="a",peer="{}",direction="sent"}}"#,
        b.peer_id
    );
    prometheus.wait_for(&sent, |v| v >= got).await;

    for job in ["a", "b"] {
        let members = format!(r#"devmesh_peers{{job="{job}",kind="member"}}"#);
        prometheus.wait_for(&members, |v| v == 1.0).await;
    }
    let remote = r#"devmesh_services{job="b",service="api",state="remote",health="unknown"}"#;
    prometheus.wait_for(remote, |v| v == 1.0).await;
    let local = r#"devmesh_services{job="a",service="api",state="local"}"#;
    prometheus.wait_for(local, |v| v == 1.0).await;
    let accepted = r#"sum(devmesh_record_gossip_total{job="b",event=~"accepted|synced"})"#;
    prometheus.wait_for(accepted, |v| v >= 1.0).await;
    let open = r#"devmesh_open_connections{job="b"}"#;
    prometheus.wait_for(open, |v| v >= 1.0).await;
    prometheus
        .wait_for(
            r#"devmesh_hole_punches_total{job="a",outcome="success"}"#,
            |v| v == 0.0,
        )
        .await;
}
