//! What a proxy observes with: its metrics, request log and trace
//! exporter. [`Observe::default`] records nothing (requests still carry
//! trace context and get `X-DevMesh-Trace-Id`).

use std::sync::Arc;

use crate::{inspect::Inspector, metrics::Metrics, reqlog::RequestLog, trace::otlp::Exporter};

/// The observability of one proxy.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Observe {
    /// Prometheus metrics, counted when set.
    pub metrics: Option<Arc<Metrics>>,
    /// One JSON line per front-door request, when set.
    pub log: Option<Arc<RequestLog>>,
    /// Spans are recorded and exported, when set.
    pub exporter: Option<Arc<Exporter>>,
    /// Requests are captured on both ends, when set.
    pub inspector: Option<Arc<Inspector>>,
}

impl Observe {
    /// Observes with `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Logs each request to `log`.
    pub fn with_log(mut self, log: Arc<RequestLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Records spans and exports them with `exporter`.
    pub fn with_exporter(mut self, exporter: Arc<Exporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Captures requests in `inspector`.
    pub fn with_inspector(mut self, inspector: Arc<Inspector>) -> Self {
        self.inspector = Some(inspector);
        self
    }

    /// Whether anything is recorded at the end of a request.
    pub(crate) fn records(&self) -> bool {
        self.metrics.is_some()
            || self.log.is_some()
            || self.exporter.is_some()
            || self.inspector.is_some()
    }
}
