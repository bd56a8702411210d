//! OTLP/HTTP export of spans (protobuf, `opentelemetry-proto` types): a
//! small batching task behind a bounded queue. Recording a span never
//! blocks a request: when the queue is full the span is dropped and
//! counted.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Kind, SpanRecord, Value};
use crate::bounded::Lossy;

/// Spans waiting for export before new ones are dropped: a
/// [`FLUSH_EVERY`] of 80,000 spans/s.
const QUEUE: usize = 8 * 1024;
/// Most spans in one export request.
const BATCH: usize = 512;
/// How often queued spans are taken for export.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Time an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A bad `--otlp` endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("OTLP endpoint {url:?} is not a URL")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error(
        "OTLP endpoint {url:?} must be plain http with a host, such as http://127.0.0.1:4318/v1/traces"
    )]
    Scheme { url: String },
}

/// The endpoint spans are posted to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Uri,
    authority: String,
}

impl Endpoint {
    /// Parses `url`: `http://host:port/path`; a URL without a path gets the
    /// standard `/v1/traces`.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let uri: Uri = url.parse().map_err(|source| EndpointError::Url {
            url: url.to_owned(),
            source,
        })?;
        let Some(authority) = uri.authority().filter(|_| uri.scheme_str() == Some("http")) else {
            return Err(EndpointError::Scheme {
                url: url.to_owned(),
            });
        };
        let authority = authority.to_string();
        let path = match uri.path() {
            "" | "/" => "/v1/traces",
            p => p,
        };
        let uri = format!("http://{authority}{path}")
            .parse()
            .map_err(|source| EndpointError::Url {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self { uri, authority })
    }
}

/// Who exports: the `service.name` and `service.instance.id` of the spans.
#[derive(Debug, Clone)]
pub struct Origin {
    pub service_name: String,
    pub instance_id: String,
}

/// The handle spans are recorded with.
#[derive(Debug)]
pub struct Exporter {
    spans: Lossy<SpanRecord>,
}

impl Exporter {
    /// Starts the export task posting to `endpoint` for `resource`.
    pub fn start(endpoint: Endpoint, resource: Origin) -> Arc<Self> {
        let (spans, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, endpoint, resource));
        Arc::new(Self {
            spans: Lossy::new(spans, "spans to export"),
        })
    }

    /// Queues `span` for export; drops it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        self.spans.send(span);
    }

    /// Spans dropped so far.
    pub fn dropped(&self) -> u64 {
        self.spans.dropped()
    }
}

/// Every [`FLUSH_EVERY`], takes the spans queued meanwhile and posts them
/// in batches of at most [`BATCH`], until every handle is gone. Polling on
/// a timer, instead of waiting on the queue, keeps recording a span from
/// waking this task each time.
async fn run(mut rx: mpsc::Receiver<SpanRecord>, endpoint: Endpoint, origin: Origin) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tick.tick().await;
        let closed = loop {
            match rx.try_recv() {
                Ok(span) => {
                    batch.push(span);
                    if batch.len() == BATCH {
                        export(&endpoint, &origin, &batch).await;
                        batch.clear();
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() {
            export(&endpoint, &origin, &batch).await;
            batch.clear();
        }
        if closed {
            return;
        }
    }
}

/// Posts `batch`, logging a failure.
async fn export(endpoint: &Endpoint, origin: &Origin, batch: &[SpanRecord]) {
    let body = encode(origin, batch);
    let n = batch.len();
    match tokio::time::timeout(EXPORT_TIMEOUT, post(endpoint, body)).await {
        Ok(Ok(())) => debug!(spans = n, "exported spans"),
        Ok(Err(reason)) => {
            warn!(spans = n, endpoint = %endpoint.uri, %reason, "exporting spans failed")
        }
        Err(_) => warn!(spans = n, endpoint = %endpoint.uri, "exporting spans timed out"),
    }
}

/// Posts one export request.
async fn post(endpoint: &Endpoint, body: Vec<u8>) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::post(endpoint.uri.clone())
        .header(header::HOST, &endpoint.authority)
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", resp.status()))
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Text(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span(record: &SpanRecord) -> Span {
    let kind = match record.kind {
        Kind::Client => SpanKind::Client,
        Kind::Server => SpanKind::Server,
    };
    Span {
        trace_id: record.trace_id.0.to_vec(),
        span_id: record.span_id.0.to_vec(),
        parent_span_id: record.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: record.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: unix_nanos(record.start),
        end_time_unix_nano: unix_nanos(record.end),
        attributes: (record.attributes.iter())
            .map(|(k, v)| key_value(k, v))
            .collect(),
        status: record.error.then(|| Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The protobuf `ExportTraceServiceRequest` of `spans` from `resource`.
pub fn encode(resource: &Origin, spans: &[SpanRecord]) -> Vec<u8> {
    let attributes = vec![
        key_value("service.name", &Value::Text(resource.service_name.clone())),
        key_value(
            "service.instance.id",
            &Value::Text(resource.instance_id.clone()),
        ),
    ];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "devmesh".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceId};

    #[test]
    fn endpoints_are_plain_http_and_default_to_v1_traces() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(e.uri, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(e.authority, "127.0.0.1:4318");
        let e = Endpoint::parse("http://collector:4318/custom").unwrap();
        assert_eq!(e.uri.path(), "/custom");
        for bad in ["https://c:4318", "127.0.0.1:4318", "/v1/traces"] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(err.contains("must be plain http"), "{bad}: {err}");
        }
        assert!(Endpoint::parse("http://a b").is_err());
    }

    #[test]
    fn spans_encode_with_ids_parent_kind_and_resource() {
        let record = SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([2; 8]),
            parent: Some(SpanId([1; 8])),
            name: "GET api".into(),
            kind: Kind::Server,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            attributes: vec![("http.response.status_code", Value::Int(502))],
            error: true,
        };
        let resource = Origin {
            service_name: "devmeshd".into(),
            instance_id: "12D3KooWA".into(),
        };
        let bytes = encode(&resource, &[record]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &decoded.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs[1].key, "service.instance.id");
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.parent_span_id, vec![1; 8]);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            1_000_000_000
        );
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(span.attributes[0].key, "http.response.status_code");
    }
}
