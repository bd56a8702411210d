use std::time::Duration;

use http::HeaderMap;

use super::*;

#[test]
fn methods_outside_the_standard_ones_share_one_label() {
    assert_eq!(method_label(&Method::GET), "GET");
    assert_eq!(method_label(&Method::PATCH), "PATCH");
    let custom = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(method_label(&custom), "_OTHER");
}

#[test]
fn routes_are_local_direct_or_relayed() {
    assert_eq!(route_label("local"), "local");
    assert_eq!(route_label("remote-direct"), "direct");
    assert_eq!(route_label("remote-relayed"), "relayed");
    assert_eq!(route_label(""), "none");
}

#[test]
fn the_front_door_keeps_metrics_for_its_own_host() {
    let get = |uri: &str, host: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(http::header::HOST, host.parse().unwrap());
        }
        is_metrics_request(&uri.parse().unwrap(), &h)
    };
    assert!(get("/metrics", Some("devmesh.localhost:7700")));
    assert!(get("/metrics", Some("DevMesh.localhost")));
    assert!(get("http://devmesh.localhost:7700/metrics", None));
    assert!(!get("/metrics", Some("api.localhost:7700")));
    assert!(!get("/metrics/x", Some("devmesh.localhost")));
    assert!(!get("/metrics", None));
}

/// A registry holding only the request families, as [`Metrics::new`]
/// registers them, without a node.
fn requests_only() -> (
    Registry,
    Family<RequestLabels, Counter>,
    Family<RequestLabels, Histogram>,
) {
    let mut registry = Registry::with_prefix("devmesh");
    let requests = Family::<RequestLabels, Counter>::default();
    let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
        (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
    );
    registry.register("requests", "r", requests.clone());
    registry.register_with_unit("request_duration", "d", Unit::Seconds, durations.clone());
    (registry, requests, durations)
}

#[test]
fn request_series_are_named_like_traefiks_with_all_labels() {
    let (registry, requests, durations) = requests_only();
    let labels = RequestLabels {
        service: "api".into(),
        method: "GET",
        code: 200,
        route: "direct",
        provider: "12D3KooW".into(),
    };
    requests.get_or_create(&labels).inc();
    durations.get_or_create(&labels).observe(0.003);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = r#"{service="api",method="GET",code="200",route="direct",provider="12D3KooW"}"#;
    assert!(
        text.contains(&format!("devmesh_requests_total{series} 1")),
        "{text}"
    );
    assert!(
        text.contains("devmesh_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(&format!("devmesh_request_duration_seconds_count{series} 1")),
        "{text}"
    );
    assert!(text.contains(r#"le="0.005""#), "{text}");
}

#[test]
fn stream_counters_count_bytes_and_open_streams() {
    let sent = Counter::default();
    let received = Counter::default();
    let open = Gauge::default();
    let counters = io::StreamCounters::new(sent.clone(), received.clone(), open.clone());
    assert_eq!(open.get(), 1);
    counters.sent(10);
    counters.received(3);
    counters.received(0);
    assert_eq!((sent.get(), received.get()), (10, 3));
    drop(counters);
    assert_eq!(open.get(), 0);
}

#[test]
fn a_connection_reuses_its_last_series_and_moves_on_when_labels_change() {
    let m = Metrics::with_collectors(vec![]);
    let last = LastSeries::default();
    let served = |code, provider| Served {
        service: "api",
        method: &Method::GET,
        code,
        route: "direct",
        provider,
        duration: Duration::from_millis(2),
        retries: 0,
    };
    m.served(&served(200, "a"), &last);
    m.served(&served(200, "a"), &last);
    m.served(&served(503, "a"), &last);
    m.served(&served(200, "b"), &last);
    m.served(&served(200, "a"), &last);
    let mut with_retry = served(200, "a");
    with_retry.retries = 2;
    m.served(&with_retry, &last);
    let text = m.encode();
    let series = |code: u16, provider: &str| {
        format!(
            r#"devmesh_requests_total{{service="api",method="GET",code="{code}",route="direct",provider="{provider}"}}"#
        )
    };
    assert!(
        text.contains(&format!("{} 4\n", series(200, "a"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 1\n", series(503, "a"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 1\n", series(200, "b"))),
        "{text}"
    );
    assert!(
        text.contains(r#"devmesh_retries_total{service="api"} 2"#),
        "{text}"
    );
}

#[test]
fn the_dashboard_reads_its_rates_from_the_duration_histogram() {
    let m = Metrics::with_collectors(vec![]);
    let last = LastSeries::default();
    for (code, ms) in [(200, 3), (200, 30), (503, 300)] {
        let served = Served {
            service: "api",
            method: &Method::GET,
            code,
            route: "direct",
            provider: "12D3KooWA",
            duration: Duration::from_millis(ms),
            retries: 0,
        };
        m.served(&served, &last);
    }
    let text = m.duration_text();
    assert!(!text.contains("devmesh_requests_total"), "{text}");
    let totals = crate::console::rates::parse(&text);
    let key = crate::console::rates::EdgeKey {
        service: "api".into(),
        provider: "12D3KooWA".into(),
        route: "direct".into(),
    };
    let t = &totals[&key];
    assert_eq!((t.count, t.errors), (3, 1), "{text}");
    assert_eq!(t.buckets.len(), DURATION_BUCKETS.len() + 1, "{text}");
    assert_eq!(t.buckets.last().unwrap(), &(f64::INFINITY, 3));
}
