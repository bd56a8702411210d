//! The request log and trace context at the front door: with
//! `--log-format json` every stderr line of B is JSON, one per request
//! among them, whose fields match what the client saw; the trace id of
//! an incoming `traceparent` is kept, `tracestate` passes unchanged, and
//! `X-DevMesh-Trace-Id` is on every response, errors included.

use std::time::Duration;

use bytes::Bytes;
use devmesh_tests::{Daemon, backend::Backend, eventually, request};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// B's request lines, once there are `n`.
async fn request_lines(b: &Daemon, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(10), "request log lines", || async {
        let lines: Vec<serde_json::Value> = b
            .log()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
            .filter(|v| v.get("trace_id").is_some())
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn json_request_log_and_trace_context() {
    let (a, b) = tokio::join!(
        Daemon::start(),
        Daemon::start_with(&["--log-format", "json"])
    );
    b.join(&a).await;
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.4.2").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;

    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let headers = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", "vendor=x,y=1"),
    ];
    let seen = request(
        b.proxy,
        "GET",
        "api.localhost",
        "/headers?q=1",
        Bytes::new(),
        &headers,
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-devmesh-trace-id"), TRACE);
    let got: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    let sent = got["headers"]["traceparent"].as_str().unwrap();
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(fields[2], PARENT, "the backend's parent is devmesh's span");
    assert_eq!(got["headers"]["tracestate"], "vendor=x,y=1");

    let upload = request(
        b.proxy,
        "POST",
        "api.localhost",
        "/echo",
        Bytes::from(vec![b'x'; 1000]),
        &[],
    )
    .await;
    assert_eq!(upload.body.len(), 1000);
    let started = upload.header("x-devmesh-trace-id").to_owned();
    assert_eq!(started.len(), 32);
    assert_ne!(started, TRACE);

    let missing = request(b.proxy, "GET", "nothing.localhost", "/", Bytes::new(), &[]).await;
    assert_eq!(missing.status, 503);
    let missing_trace = missing.header("x-devmesh-trace-id").to_owned();
    assert_eq!(
        missing_trace.len(),
        32,
        "errors of the front door carry it too"
    );

    let lines = request_lines(&b, 3).await;
    let by_trace = |t: &str| {
        lines
            .iter()
            .find(|l| l["trace_id"] == t)
            .unwrap_or_else(|| panic!("no line for {t} in {lines:?}"))
    };
    let get = by_trace(TRACE);
    assert_eq!(get["method"], "GET");
    assert_eq!(get["path"], "/headers?q=1");
    assert_eq!(get["status"], 200);
    assert_eq!(get["service"], "api");
    assert_eq!(get["version"], "1.4.2");
    assert_eq!(get["provider"], a.peer_id.as_str());
    assert_eq!(get["route"], "direct");
    assert_eq!(get["attempts"], 1);
    assert_eq!(get["bytes_in"], 0);
    assert_eq!(get["bytes_out"], seen.body.len() as u64);
    assert!(get["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(get["time"].as_str().unwrap().ends_with('Z'));
    let post = by_trace(&started);
    assert_eq!(
        (
            post["method"].as_str(),
            post["bytes_in"].as_u64(),
            post["bytes_out"].as_u64()
        ),
        (Some("POST"), Some(1000), Some(1000))
    );
    let refused = by_trace(&missing_trace);
    assert_eq!(
        (
            refused["status"].as_u64(),
            refused["route"].as_str(),
            refused["provider"].as_str()
        ),
        (Some(503), Some("none"), Some(""))
    );
    // Nothing was dropped, as the metrics say.
    let metrics = request(
        b.proxy,
        "GET",
        "devmesh.localhost",
        "/metrics",
        Bytes::new(),
        &[],
    )
    .await;
    assert_eq!(metrics.header("x-devmesh-trace-id").len(), 32);
    assert!(
        metrics
            .text()
            .contains("devmesh_observe_dropped_total{what=\"request_log\"} 0\n"),
        "{}",
        metrics.text()
    );
    // The daemon's own diagnostics are JSON lines too.
    assert!(
        b.log().lines().any(|l| l.contains("\"devmeshd started\"")),
        "{}",
        b.log()
    );
}
