//! Traces across machines: a real OpenTelemetry-instrumented client and
//! backend (Python's opentelemetry-sdk) with devmesh between them, B
//! calling A's service, both nodes exporting with `--otlp` to a receiver in
//! the test that decodes the export with `opentelemetry-proto`. One trace
//! id runs from client to backend, and the parent links go through B's
//! client span and A's server span, recorded on the two nodes.

use std::{
    collections::HashMap,
    convert::Infallible,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use devmesh_tests::{Daemon, SHORT, eventually};
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value,
};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A span as received: who sent it and its links.
#[derive(Debug, Clone)]
struct Received {
    /// `service.name` of the resource.
    service: String,
    /// `service.instance.id` of the resource (devmesh: the peer id).
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    start: u64,
    end: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_attribute(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

/// Decodes one OTLP/HTTP protobuf export into its spans.
fn decode(body: &[u8]) -> Vec<Received> {
    let request = ExportTraceServiceRequest::decode(body).expect("a protobuf export request");
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let (service, instance) = (
            text_attribute(&attrs, "service.name"),
            text_attribute(&attrs, "service.instance.id"),
        );
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Received {
                service: service.clone(),
                instance: instance.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                kind: span.kind,
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
            });
        }
    }
    out
}

/// An OTLP/HTTP receiver on loopback keeping every span it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        kept.lock().unwrap().extend(decode(&body));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (url, spans)
}

/// A span's sender: `devmeshd/<peer id>`, or the Python service's name
/// (whose SDK makes up an instance id).
fn key(span: &Received) -> String {
    if span.service == "devmeshd" {
        format!("devmeshd/{}", span.instance)
    } else {
        span.service.clone()
    }
}

fn otel_peer() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/otel_peer.py")
}

/// Whether Python's OpenTelemetry SDK and OTLP exporter are importable;
/// CI installs them, elsewhere the test skips with the reason.
async fn opentelemetry_sdk() -> bool {
    let ok = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !ok {
        let install =
            "python3 -m pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http";
        assert!(
            std::env::var_os("CI").is_none(),
            "needed: {install} (.ci/run does it)"
        );
        eprintln!("skipping: Python's OpenTelemetry SDK is not installed ({install})");
    }
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_from_client_through_both_nodes_to_backend() {
    if !opentelemetry_sdk().await {
        return;
    }
    let (otlp, spans) = receiver().await;
    let mut backend = tokio::process::Command::new("python3")
        .arg(otel_peer())
        .args(["backend", &otlp])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the Python backend");
    let mut lines = BufReader::new(backend.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(SHORT, lines.next_line())
        .await
        .expect("the backend printed no port")
        .unwrap()
        .expect("the backend exited")
        .trim()
        .parse()
        .unwrap();
    let args = ["--otlp", otlp.as_str()];
    let (a, b) = tokio::join!(Daemon::start_with(&args), Daemon::start_with(&args));
    b.join(&a).await;
    let _run = a.run_service("api", port, "2.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(otel_peer())
            .args(["client", &otlp, &b.proxy.to_string(), "api.localhost"])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .output(),
    )
    .await
    .expect("the Python client timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(printed[0], "200", "{stdout}");
    let trace_id = printed[1].to_owned();
    assert_eq!(
        printed[2], trace_id,
        "X-DevMesh-Trace-Id is the client's trace id"
    );

    let by_service: HashMap<String, Received> =
        eventually(Duration::from_secs(15), "four spans", || async {
            let spans = spans.lock().unwrap();
            let of_trace: HashMap<String, Received> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (key(s), s.clone()))
                .collect();
            (of_trace.len() >= 4).then_some(of_trace)
        })
        .await;
    let find = |key: &str| {
        by_service
            .get(key)
            .unwrap_or_else(|| panic!("no span of {key}: {by_service:#?}"))
            .clone()
    };
    let client = find("py-client");
    let caller = find(&format!("devmeshd/{}", b.peer_id));
    let provider = find(&format!("devmeshd/{}", a.peer_id));
    let work = find("py-backend");
    // SpanKind: 2 server, 3 client.
    assert_eq!((caller.kind, provider.kind), (3, 2));
    assert_eq!(
        caller.parent, client.span_id,
        "B's span is the client's child"
    );
    assert_eq!(provider.parent, caller.span_id, "A's span is B's child");
    assert_eq!(
        work.parent, provider.span_id,
        "the backend's span is A's child"
    );
    assert_eq!(caller.name, "GET api");
    // B's span covers A's; the backend's starts within A's (it ends its
    // own span only after writing the response A has already passed on).
    assert!(
        caller.start <= provider.start && provider.end <= caller.end,
        "{caller:?} {provider:?}"
    );
    assert!(
        provider.start <= work.start && work.start <= provider.end,
        "{provider:?} {work:?}"
    );
}
