//! What the observed front door records once a response body has ended:
//! the metrics, the request log line and the client span; and the body
//! wrapper that counts the bytes sent and knows when that is.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf as _, Bytes};
use http::Method;
use http_body_util::Either;
use hyper::body::{Frame, SizeHint};

use crate::{
    Observe,
    body::{Body, Tally},
    console::SiteBody,
    metrics, reqlog,
    trace::{self, SpanId, TraceParent},
};

/// A request, as recorded once its response has been sent.
pub(super) struct Finish {
    pub observe: Observe,
    /// The connection's last metric series.
    pub series: Arc<metrics::LastSeries>,
    pub start: Instant,
    pub started_at: SystemTime,
    /// When the response head was ready.
    pub head_after: Duration,
    /// How long routing and choosing the providers took, when they did.
    pub routed: Option<Duration>,
    pub method: Method,
    pub path: String,
    pub code: u16,
    pub service: String,
    pub version: String,
    pub provider: String,
    pub route: &'static str,
    /// Providers tried.
    pub attempts: usize,
    pub bytes_in: Option<Arc<Tally>>,
    /// The trace, with the client span as parent.
    pub trace: TraceParent,
    /// The parent the request came with.
    pub parent: Option<SpanId>,
}

impl Finish {
    fn run(self, bytes_out: u64) {
        let duration = self.start.elapsed();
        if let Some(m) = &self.observe.metrics {
            let served = metrics::Served {
                service: &self.service,
                method: &self.method,
                code: self.code,
                route: self.route,
                provider: &self.provider,
                duration,
                retries: self.attempts.saturating_sub(1),
            };
            m.served(&served, &self.series);
        }
        if let Some(log) = &self.observe.log {
            log.write(&reqlog::Line {
                time: reqlog::time_text(self.started_at),
                method: self.method.as_str(),
                path: &self.path,
                status: self.code,
                service: &self.service,
                version: &self.version,
                provider: &self.provider,
                route: self.route,
                attempts: self.attempts,
                duration_ms: reqlog::millis(duration),
                bytes_in: self.bytes_in.as_ref().map_or(0, |t| t.get()),
                bytes_out,
                trace_id: self.trace.trace_id.to_string(),
            });
        }
        // A caller that does not sample its trace gets no span (its
        // requests still carry the trace on).
        if let Some(exporter) = &self.observe.exporter
            && self.trace.flags & 1 == 1
        {
            exporter.record(self.client_span(duration));
        }
    }

    /// The client span: from arrival to the end of the response body.
    fn client_span(&self, duration: Duration) -> trace::SpanRecord {
        use trace::Value::{Int, Text};
        let mut attributes = vec![
            ("http.request.method", Text(self.method.to_string())),
            ("url.path", Text(self.path.clone())),
            ("http.response.status_code", Int(i64::from(self.code))),
            ("devmesh.service", Text(self.service.clone())),
            ("devmesh.route", Text(self.route.to_owned())),
            ("devmesh.attempts", Int(self.attempts as i64)),
            (
                "devmesh.response_head_us",
                Int(self.head_after.as_micros() as i64),
            ),
        ];
        if let Some(routed) = self.routed {
            attributes.push(("devmesh.routing_us", Int(routed.as_micros() as i64)));
        }
        if !self.provider.is_empty() {
            attributes.push(("devmesh.provider", Text(self.provider.clone())));
            attributes.push(("devmesh.version", Text(self.version.clone())));
        }
        trace::SpanRecord {
            trace_id: self.trace.trace_id,
            span_id: self.trace.parent,
            parent: self.parent,
            name: format!("{} {}", self.method, self.service),
            kind: trace::Kind::Client,
            start: self.started_at,
            end: self.started_at + duration,
            attributes,
            error: self.code >= 500,
        }
    }
}

/// A front-door response body that counts its bytes and, once it has been
/// sent (or the client went away), records the request.
pub(crate) struct Observed {
    /// A proxied response (or a page of the proxy), or the node's site.
    inner: Either<Body, SiteBody>,
    finish: Option<Box<Finish>>,
    sent: u64,
}

impl Observed {
    pub(super) fn new(inner: Body, finish: Option<Box<Finish>>) -> Self {
        Self {
            inner: Either::Left(inner),
            finish,
            sent: 0,
        }
    }

    /// A response of the node's site, recorded nowhere.
    pub(super) fn site(inner: SiteBody) -> Self {
        Self {
            inner: Either::Right(inner),
            finish: None,
            sent: 0,
        }
    }
}

impl hyper::body::Body for Observed {
    type Data = Bytes;
    type Error = <Either<Body, SiteBody> as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            self.sent += data.remaining() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.run(self.sent);
        }
    }
}
