//! Prometheus metrics of a node (`prometheus-client`, OpenMetrics text).
//!
//! Names follow Traefik's where they fit (`devmesh_requests_total`,
//! `devmesh_request_duration_seconds`, `devmesh_retries_total`,
//! `devmesh_open_connections`) with labels after the OpenTelemetry HTTP
//! conventions (`method`, `code`); docs/observability.md lists them all.
//!
//! Counting is cheap on the hot path: a request takes one family lookup (a
//! read lock, the series made once) per counter and histogram; tunnel bytes
//! are counted with atomics held by the stream ([`io::StreamCounters`]),
//! never a lock per read or write. Label sets stay bounded: services are
//! those of the mesh (a request for an unknown name is labelled `unknown`),
//! methods are the standard ones or `_OTHER`, peers are the team's.
//! What the node's view shows (peers, services) and mesh-core's counters
//! are read at scrape time by [`node::NodeCollector`].

pub(crate) mod io;
mod node;
mod serve;

use std::time::Duration;

use http::Method;
use mesh_core::{NodeHandle, PeerId};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub(crate) use serve::response;
pub use serve::{METRICS_HOST, METRICS_PATH, is_metrics_request, is_own_host, serve};

/// Bucket bounds of request durations, seconds (Traefik's defaults, with
/// finer steps below 100 ms where a dev mesh lives).
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The series a front-door connection counted its last request in.
#[derive(Debug, Default)]
pub(crate) struct LastSeries(std::sync::Mutex<Option<(RequestLabels, Counter, Histogram)>>);

impl RequestLabels {
    /// Whether `served` (with its `method` label) goes in this series.
    fn is(&self, served: &Served<'_>, method: &'static str) -> bool {
        self.code == served.code
            && self.route == served.route
            && self.method == method
            && self.service == served.service
            && self.provider == served.provider
    }
}

/// Labels of a request's counter and histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The service, or `unknown` when the request named no known one.
    pub service: String,
    /// The request method, `_OTHER` for non-standard ones.
    pub method: &'static str,
    /// The response status code.
    pub code: u16,
    /// `local`, `direct`, `relayed`, or `none` when the front door answered.
    pub route: &'static str,
    /// The provider's peer id, empty when none served.
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// Which way a tunnel stream was opened.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Opened {
    /// By this node, to a provider.
    Outbound,
    /// By a consumer, to this node's backend.
    Inbound,
}

impl Opened {
    fn as_str(self) -> &'static str {
        match self {
            Opened::Outbound => "outbound",
            Opened::Inbound => "inbound",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    peer: String,
    direction: &'static str,
}

/// What one request did, as counted.
#[derive(Debug)]
pub(crate) struct Served<'a> {
    pub service: &'a str,
    pub method: &'a Method,
    pub code: u16,
    pub route: &'static str,
    pub provider: &'a str,
    pub duration: Duration,
    /// Attempts beyond the first.
    pub retries: usize,
}

/// The metrics of one node and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// A registry of the request durations alone, read by the dashboard.
    durations_only: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    retries: Family<ServiceLabels, Counter>,
    open_connections: Gauge,
    streams: Family<StreamLabels, Counter>,
    open_streams: Family<StreamLabels, Gauge>,
    bytes: Family<StreamLabels, Counter>,
}

impl Metrics {
    /// The metrics of `node`'s proxy; the node's view and counters are read
    /// at each scrape, and so are the drops of the request log and trace
    /// export `observe` holds.
    pub fn new(node: &NodeHandle, observe: &crate::Observe) -> Self {
        let drops = node::DropCollector {
            log: observe.log.clone(),
            exporter: observe.exporter.clone(),
        };
        Self::with_collectors(vec![
            Box::new(node::NodeCollector::new(node.clone())),
            Box::new(drops),
        ])
    }

    /// The request and tunnel metrics, and `collectors` read at scrape time.
    fn with_collectors(collectors: Vec<Box<dyn prometheus_client::collector::Collector>>) -> Self {
        let mut registry = Registry::with_prefix("devmesh");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let retries = Family::<ServiceLabels, Counter>::default();
        let open_connections = Gauge::default();
        let streams = Family::<StreamLabels, Counter>::default();
        let open_streams = Family::<StreamLabels, Gauge>::default();
        let bytes = Family::<StreamLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests the front door answered, by service, method, status code, route and provider",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival at the front door to its response head",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "retries",
            "Requests sent again to another provider after a failed attempt",
            retries.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open on the front door",
            open_connections.clone(),
        );
        registry.register(
            "tunnel_streams",
            "Tunnel streams opened, by peer and direction (outbound: to a provider; inbound: from a consumer)",
            streams.clone(),
        );
        registry.register(
            "tunnel_open_streams",
            "Tunnel streams open now, by peer and direction",
            open_streams.clone(),
        );
        registry.register_with_unit(
            "tunnel",
            "Bytes moved through tunnel streams, by peer and direction (sent or received by this node)",
            Unit::Bytes,
            bytes.clone(),
        );
        for collector in collectors {
            registry.register_collector(collector);
        }
        let mut durations_only = Registry::with_prefix("devmesh");
        durations_only.register_with_unit(
            "request_duration",
            "Time from a request's arrival at the front door to its response head",
            Unit::Seconds,
            durations.clone(),
        );
        Self {
            registry,
            durations_only,
            requests,
            durations,
            retries,
            open_connections,
            streams,
            open_streams,
            bytes,
        }
    }

    /// Counts one answered request; `last` holds the series the same
    /// connection counted in last, which its next request mostly shares
    /// (then no family is looked up and no label allocated).
    pub(crate) fn served(&self, served: &Served<'_>, last: &LastSeries) {
        let method = method_label(served.method);
        let seconds = served.duration.as_secs_f64();
        let mut last = last.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((labels, requests, durations)) if labels.is(served, method) => {
                requests.inc();
                durations.observe(seconds);
            }
            _ => {
                let labels = RequestLabels {
                    service: served.service.to_owned(),
                    method,
                    code: served.code,
                    route: served.route,
                    provider: served.provider.to_owned(),
                };
                let requests = self.requests.get_or_create_owned(&labels);
                let durations = self.durations.get_or_create_owned(&labels);
                requests.inc();
                durations.observe(seconds);
                *last = Some((labels, requests, durations));
            }
        }
        drop(last);
        if served.retries > 0 {
            self.retries
                .get_or_create(&ServiceLabels {
                    service: served.service.to_owned(),
                })
                .inc_by(served.retries as u64);
        }
    }

    /// Counts a front-door connection until the guard is dropped.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    /// The counters of a tunnel stream with `peer` opened `opened`; the
    /// stream counts as open until they are dropped.
    pub(crate) fn stream(&self, peer: &PeerId, opened: Opened) -> io::StreamCounters {
        let peer = peer.to_string();
        let labels = |direction| StreamLabels {
            peer: peer.clone(),
            direction,
        };
        self.streams.get_or_create(&labels(opened.as_str())).inc();
        let open = self
            .open_streams
            .get_or_create_owned(&labels(opened.as_str()));
        io::StreamCounters::new(
            self.bytes.get_or_create_owned(&labels("sent")),
            self.bytes.get_or_create_owned(&labels("received")),
            open,
        )
    }

    /// The OpenMetrics text of the request duration histogram alone (what
    /// the dashboard's rates and quantiles come from).
    pub fn duration_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.durations_only);
        out
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a front-door connection counted as open.
pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `method` label of `method`: its name when it is a standard one,
/// `_OTHER` otherwise (as OpenTelemetry does), so clients cannot grow the
/// label set.
pub(crate) fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or("_OTHER", |(_, name)| name)
}

/// The `route` label of an `X-DevMesh-Route` value: `local`, `direct` or
/// `relayed`.
pub(crate) fn route_label(route: &str) -> &'static str {
    match route {
        "local" => "local",
        "remote-direct" => "direct",
        "remote-relayed" => "relayed",
        _ => "none",
    }
}

#[cfg(test)]
mod tests;
