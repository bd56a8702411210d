//! Traces across machines: W3C Trace Context ([`context`]), the spans a
//! node records ([`SpanRecord`]: a client span on the caller's node, a
//! server span on the provider's node, [`sniff`] finding the requests of a
//! provider's tunnel), and their optional OTLP/HTTP export ([`otlp`]).

pub mod context;
pub mod otlp;
pub mod sniff;

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

pub use context::{SpanId, TraceId, TraceParent};

/// The response header carrying a request's trace id, on every response.
pub const TRACE_ID_HEADER: &str = "x-devmesh-trace-id";

/// Whether a span is the caller's or the provider's side of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The caller's node: the front door forwarding a request.
    Client,
    /// The provider's node: a tunnelled request served by its backend.
    Server,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    Text(String),
    Int(i64),
}

/// One finished span, as exported.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The span this one is a child of, `None` for a root.
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    /// OpenTelemetry HTTP attributes and `devmesh.*` ones.
    pub attributes: Vec<(&'static str, Value)>,
    /// The request failed (a 5xx status, or no response).
    pub error: bool,
}

/// The server spans of one provider tunnel: its sniffer, fed by the
/// splice, and the exporter the spans go to.
#[derive(Debug)]
pub(crate) struct TunnelTrace {
    sniffer: Mutex<sniff::Sniffer>,
    exporter: Arc<otlp::Exporter>,
}

impl TunnelTrace {
    /// Traces a tunnel for `service` from `consumer`.
    pub(crate) fn new(service: String, consumer: String, exporter: Arc<otlp::Exporter>) -> Self {
        Self {
            sniffer: Mutex::new(sniff::Sniffer::new(service, consumer)),
            exporter,
        }
    }

    fn sniffer(&self) -> std::sync::MutexGuard<'_, sniff::Sniffer> {
        // A panic while sniffing leaves nothing half-written that matters.
        self.sniffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes read from the consumer, before they go to the backend.
    pub(crate) fn consumer(&self, bytes: &mut [u8]) {
        self.sniffer().on_consumer(bytes, SystemTime::now());
    }

    /// Bytes read from the backend, before they go to the consumer.
    pub(crate) fn backend(&self, bytes: &[u8]) {
        let span = self.sniffer().on_backend(bytes, SystemTime::now());
        if let Some(span) = span {
            self.exporter.record(span);
        }
    }

    /// The tunnel ended.
    pub(crate) fn close(&self) {
        let span = self.sniffer().on_close(SystemTime::now());
        if let Some(span) = span {
            self.exporter.record(span);
        }
    }
}
