//! The observed front door: hands the node's site (`devmesh.localhost`:
//! dashboard, metrics) to [`crate::console`]; continues the
//! request's W3C trace (or starts one), with the client span's id as the
//! parent the request carries on and its trace id in `X-DevMesh-Trace-Id`
//! on the response; and, once the response body has ended, counts the
//! request, logs it and records the client span ([`finish`]), from the
//! response's `X-DevMesh-*` headers (or the [`Unserved`] note of a 502).

mod finish;

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;

use self::finish::Finish;
pub(crate) use self::finish::Observed;
use super::Front;
use crate::{
    Proxy,
    body::Tally,
    console, metrics, route, stamp,
    trace::{self, SpanId, TraceParent, context::TRACEPARENT},
};

/// Put on a 502 by the pipeline: the service the request was for and how
/// many providers were tried.
#[derive(Debug, Clone)]
pub(crate) struct Unserved {
    pub service: String,
    pub attempts: usize,
}

/// Put on a response by the pipeline: how long routing and choosing took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routed(pub std::time::Duration);

/// The service, provider, route and retries of an answered request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub provider: &'a str,
    pub route: &'static str,
    pub retries: usize,
}

/// What a response tells about how it was served.
pub(crate) fn outcome<'a>(headers: &'a HeaderMap, unserved: Option<&'a Unserved>) -> Outcome<'a> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(u) = unserved {
        return Outcome {
            service: &u.service,
            version: "",
            provider: "",
            route: "none",
            retries: u.attempts.saturating_sub(1),
        };
    }
    let (service, version) = match text(route::SERVICE_HEADER) {
        Some(v) => v.split_once('@').unwrap_or((v, "")),
        None => ("unknown", ""),
    };
    Outcome {
        service,
        version,
        provider: text(stamp::PROVIDER_HEADER).unwrap_or(""),
        route: metrics::route_label(text(stamp::ROUTE_HEADER).unwrap_or("")),
        retries: text(stamp::ATTEMPTS_HEADER)
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(0, |n| n.saturating_sub(1)),
    }
}

/// The trace a request continues (its `traceparent`, when valid) or
/// starts, with `span` as the parent it carries on; and the parent it came
/// with.
fn continue_trace(headers: &HeaderMap, span: SpanId) -> (TraceParent, Option<SpanId>) {
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| TraceParent::parse(v.as_bytes()).ok());
    match incoming {
        Some(tp) => (tp.child(span), Some(tp.parent)),
        None => (TraceParent::new_root(span), None),
    }
}

fn trace_id_value(trace: &TraceParent) -> HeaderValue {
    let mut hex = [0u8; 32];
    trace::context::encode_hex(&trace.trace_id.0, &mut hex);
    HeaderValue::from_bytes(&hex).expect("hex is a header value")
}

impl Proxy {
    /// A request arriving at the front door, observed.
    pub(super) async fn observe(
        &self,
        mut req: Request<Incoming>,
        front: &Front,
    ) -> Response<Observed> {
        let span = SpanId::random();
        let (trace, parent) = continue_trace(req.headers(), span);
        let trace_id = trace_id_value(&trace);
        // The node's own site (dashboard, metrics, inspector API) is not
        // observed: it is not traffic of the mesh.
        if console::is_site_request(req.uri(), req.headers()) {
            let mut resp = self.site(req).await;
            resp.headers_mut().insert(trace::TRACE_ID_HEADER, trace_id);
            return resp.map(Observed::site);
        }
        let outgoing = HeaderValue::from_bytes(&trace.to_bytes()).expect("traceparent is ascii");
        req.headers_mut().insert(TRACEPARENT, outgoing);
        if !self.observe.records() {
            let mut resp = self.handle(req, front).await;
            resp.headers_mut().insert(trace::TRACE_ID_HEADER, trace_id);
            return resp.map(|b| Observed::new(b, None));
        }
        let (start, started_at) = (Instant::now(), SystemTime::now());
        let method = req.method().clone();
        let wants_path = self.observe.log.is_some() || self.observe.exporter.is_some();
        let path = wants_path
            .then(|| req.uri().path_and_query().map(|pq| pq.as_str().to_owned()))
            .flatten()
            .unwrap_or_default();
        let tally = (self.observe.log.is_some()).then(|| Arc::new(Tally::default()));
        if let Some(t) = &tally {
            req.extensions_mut().insert(t.clone());
        }
        let mut resp = self.handle(req, front).await;
        let unserved = resp.extensions_mut().remove::<Unserved>();
        let routed = resp.extensions_mut().remove::<Routed>().map(|r| r.0);
        let o = outcome(resp.headers(), unserved.as_ref());
        let tried = !o.provider.is_empty() || unserved.is_some();
        let finish = Finish {
            observe: self.observe.clone(),
            series: front.series.clone(),
            start,
            started_at,
            head_after: start.elapsed(),
            routed,
            method,
            path,
            code: resp.status().as_u16(),
            service: o.service.to_owned(),
            version: o.version.to_owned(),
            provider: o.provider.to_owned(),
            route: o.route,
            attempts: if tried { o.retries + 1 } else { 0 },
            bytes_in: tally,
            trace,
            parent,
        };
        resp.headers_mut().insert(trace::TRACE_ID_HEADER, trace_id);
        resp.map(|b| Observed::new(b, Some(Box::new(finish))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_anything_else_starts_a_trace() {
        let span = SpanId::random();
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let (trace, parent) = continue_trace(&h, span);
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            trace.parent, span,
            "the request goes on with devmesh's span"
        );
        assert_eq!(trace.flags, 0, "the caller's sampling flag is kept");
        assert_eq!(parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert_eq!(trace_id_value(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");

        h.insert(TRACEPARENT, "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        let (fresh, parent) = continue_trace(&h, span);
        assert_ne!(fresh.trace_id, trace.trace_id);
        assert_eq!((fresh.parent, fresh.flags, parent), (span, 1, None));
    }

    #[test]
    fn outcomes_come_from_the_stamped_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-devmesh-service", "api@1.2.0".parse().unwrap());
        h.insert("x-devmesh-provider", "12D3KooWA".parse().unwrap());
        h.insert("x-devmesh-route", "remote-relayed".parse().unwrap());
        h.insert("x-devmesh-attempts", "3".parse().unwrap());
        let o = outcome(&h, None);
        assert_eq!(
            o,
            Outcome {
                service: "api",
                version: "1.2.0",
                provider: "12D3KooWA",
                route: "relayed",
                retries: 2
            }
        );
        let empty = HeaderMap::new();
        let o = outcome(&empty, None);
        assert_eq!((o.service, o.route, o.retries), ("unknown", "none", 0));
        let u = Unserved {
            service: "web".into(),
            attempts: 2,
        };
        let o = outcome(&h, Some(&u));
        assert_eq!(
            (o.service, o.provider, o.route, o.retries),
            ("web", "", "none", 1)
        );
    }
}
