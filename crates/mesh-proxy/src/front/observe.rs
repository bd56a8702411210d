//! The observed front door: answers the metrics endpoint, and counts every
//! other request once the pipeline has answered it, from the response's
//! `X-DevMesh-*` headers (or the [`Unserved`] note of a 502).

use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;

use super::Front;
use crate::{Proxy, body::Body, metrics, route, stamp};

/// Put on a 502 by the pipeline: the service the request was for and how
/// many providers were tried.
#[derive(Debug, Clone)]
pub(crate) struct Unserved {
    pub service: String,
    pub attempts: usize,
}

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

impl Proxy {
    /// A request arriving at the front door, observed.
    pub(super) async fn observe(&self, req: Request<Incoming>, front: &Front) -> Response<Body> {
        let Some(m) = self.observe.metrics.as_deref() else {
            return self.handle(req, front).await;
        };
        if metrics::is_metrics_request(req.uri(), req.headers()) {
            return metrics::response(m).map(Either::Right);
        }
        let start = Instant::now();
        let method = req.method().clone();
        let mut resp = self.handle(req, front).await;
        let unserved = resp.extensions_mut().remove::<Unserved>();
        let o = outcome(resp.headers(), unserved.as_ref());
        m.served(&metrics::Served {
            service: o.service,
            method: &method,
            code: resp.status().as_u16(),
            route: o.route,
            provider: o.provider,
            duration: start.elapsed(),
            retries: o.retries,
        });
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
