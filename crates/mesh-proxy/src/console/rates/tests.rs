use super::*;

/// The text of a histogram with two series of one edge (a 200 and a 503)
/// and one of another, as prometheus-client writes it.
fn text(ok: u64, failed: u64, other: u64) -> String {
    let series = |labels: &str, counts: [u64; 3]| {
        let les = ["0.005", "0.01", "+Inf"];
        les.iter()
            .zip(counts)
            .map(|(le, n)| {
                format!("devmesh_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n")
            })
            .collect::<String>()
    };
    let a = r#"service="api",method="GET",code="200",route="direct",provider="12D3KooWA""#;
    let b = r#"service="api",method="POST",code="503",route="direct",provider="12D3KooWA""#;
    let c = r#"service="web",method="GET",code="200",route="local",provider="12D3KooWB""#;
    format!(
        "# TYPE devmesh_request_duration_seconds histogram\n{}{}{}devmesh_request_duration_seconds_count{{{a}}} {ok}\n# EOF\n",
        series(a, [ok / 2, ok, ok]),
        series(b, [0, 0, failed]),
        series(c, [other, other, other]),
    )
}

fn key(service: &str, provider: &str, route: &str) -> EdgeKey {
    EdgeKey {
        service: service.into(),
        provider: provider.into(),
        route: route.into(),
    }
}

#[test]
fn histogram_text_is_summed_per_edge_with_5xx_apart() {
    let totals = parse(&text(10, 2, 3));
    assert_eq!(totals.len(), 2);
    let api = &totals[&key("api", "12D3KooWA", "direct")];
    assert_eq!((api.count, api.errors), (12, 2));
    assert_eq!(
        api.buckets,
        vec![(0.005, 5), (0.01, 10), (f64::INFINITY, 12)]
    );
    let web = &totals[&key("web", "12D3KooWB", "local")];
    assert_eq!((web.count, web.errors), (3, 0));
}

#[test]
fn malformed_lines_and_other_families_are_skipped() {
    let text = "devmesh_requests_total{service=\"api\"} 4\n\
        devmesh_request_duration_seconds_bucket{service=\"api\",le=\"+Inf\"} x\n\
        devmesh_request_duration_seconds_bucket{service=\"api\",le=\"0.1} 3\n\
        devmesh_request_duration_seconds_bucket 3\n\
        devmesh_request_duration_seconds_bucket{le=\"+Inf\"} 3\n";
    assert!(parse(text).is_empty());
}

#[test]
fn escaped_label_values_are_read() {
    let labels = parse_labels(r#"service="a\"b",provider="x\\y",route="l\n""#).unwrap();
    assert_eq!(
        labels,
        vec![
            ("service".into(), "a\"b".into()),
            ("provider".into(), "x\\y".into()),
            ("route".into(), "l\n".into()),
        ]
    );
}

#[test]
fn quantiles_interpolate_inside_buckets_like_prometheus() {
    let buckets = [(0.01, 50), (0.1, 90), (1.0, 100), (f64::INFINITY, 100)];
    assert_eq!(quantile(0.5, &buckets), Some(0.01));
    // Rank 95 is halfway through the (0.1, 1] bucket.
    let p95 = quantile(0.95, &buckets).unwrap();
    assert!((p95 - 0.55).abs() < 1e-9, "{p95}");
    // Everything above the last finite bound: that bound.
    assert_eq!(quantile(0.5, &[(0.1, 0), (f64::INFINITY, 4)]), Some(0.1));
    assert_eq!(quantile(0.5, &[(0.1, 0), (f64::INFINITY, 0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
}

#[test]
fn stats_cover_what_happened_in_the_window() {
    let start = Instant::now();
    let mut h = History::default();
    h.push(start, parse(&text(10, 0, 3)));
    assert!(h.edges().is_empty(), "one sample: nothing happened yet");
    h.push(start + Duration::from_secs(2), parse(&text(30, 4, 3)));
    let edges = h.edges();
    assert_eq!(edges.len(), 1, "web had no request in the window");
    let (k, s) = &edges[0];
    assert_eq!(k, &key("api", "12D3KooWA", "direct"));
    assert_eq!((s.rate, s.errors, s.requests), (12.0, 2.0, 24));
    assert!(s.p50_ms.unwrap() > 0.0 && s.p95_ms.unwrap() >= s.p50_ms.unwrap());
    let services = h.services();
    assert_eq!(services["api"].rate, 12.0);
    assert!(!services.contains_key("web"));
}

#[test]
fn the_window_slides() {
    let start = Instant::now();
    let mut h = History::default();
    for i in 0..30u64 {
        h.push(start + Duration::from_secs(i), parse(&text(i * 10, 0, 0)));
    }
    let seconds = h.seconds();
    assert!(
        (WINDOW.as_secs_f64()..WINDOW.as_secs_f64() + 1.0).contains(&seconds),
        "{seconds}"
    );
    assert_eq!(h.edges()[0].1.rate, 10.0);
    // Requests stop: the rate falls to nothing once the window has passed.
    for i in 30..45u64 {
        h.push(start + Duration::from_secs(i), parse(&text(290, 0, 0)));
    }
    assert!(h.edges().is_empty());
}
