//! What a proxy observes with: its metrics, and later its request log and
//! tracer. [`Observe::default`] observes nothing (no counting at all).

use std::sync::Arc;

use crate::metrics::Metrics;

/// The observability of one proxy.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Observe {
    /// Prometheus metrics, counted when set.
    pub metrics: Option<Arc<Metrics>>,
}

impl Observe {
    /// Observes with `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}
