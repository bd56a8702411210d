use http::HeaderMap;

use super::*;

fn entry(service: &str, status: u16, body: usize) -> Entry {
    Entry {
        id: 0,
        side: Side::Caller,
        time: String::new(),
        method: "GET".into(),
        url: "/".into(),
        request_headers: vec![],
        request_body: BodyPrefix::default(),
        status,
        response_headers: vec![],
        response_body: BodyPrefix {
            bytes: "x".repeat(body).into(),
            truncated: false,
            total: body as u64,
        },
        service: service.into(),
        version: String::new(),
        provider: String::new(),
        consumer: String::new(),
        route: "local".into(),
        timings: Timings::default(),
        trace_id: format!("t{status}"),
    }
}

#[test]
fn the_oldest_entries_go_first_by_count() {
    let mut b = Buffer::new(3, 1 << 20);
    for i in 0..5 {
        assert_eq!(b.push(entry("api", 200, i)).id, i as u64 + 1);
    }
    let ids: Vec<u64> = b
        .list(&Filter::default(), 100)
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [5, 4, 3], "newest first");
    assert!(b.get(2).is_none());
    assert_eq!(b.get(4).unwrap().response_body.bytes.len(), 3);
    let ids: Vec<u64> = b.list(&Filter::default(), 2).iter().map(|e| e.id).collect();
    assert_eq!(ids, [5, 4], "limited");
}

#[test]
fn the_byte_budget_evicts_and_too_large_entries_are_not_kept() {
    let one = entry("api", 200, 1000).size();
    let mut b = Buffer::new(100, 2 * one + 10);
    b.push(entry("api", 200, 1000));
    b.push(entry("api", 200, 1000));
    b.push(entry("api", 200, 1000));
    assert_eq!(b.usage(), (2, 2 * one));
    let id = b.push(entry("api", 200, 10 * one)).id;
    assert!(b.get(id).is_none());
    assert_eq!(b.usage().0, 2);
}

#[test]
fn filters_select_by_service_and_status_class() {
    let mut b = Buffer::default();
    b.push(entry("api", 200, 0));
    b.push(entry("api", 503, 0));
    b.push(entry("web", 502, 0));
    let f = Filter {
        service: Some("api".into()),
        status_class: Some(status_class("5xx").unwrap()),
    };
    let found = b.list(&f, 100);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].status, 503);
    assert_eq!(status_class("2XX"), Ok(2));
    let err = status_class("404").unwrap_err().to_string();
    assert!(err.contains("use 1xx, 2xx"), "{err}");
    assert_eq!(b.by_trace("t502", Side::Caller).unwrap().service, "web");
    assert!(b.by_trace("t502", Side::Provider).is_none());
}

#[test]
fn secrets_are_masked_unless_asked_for() {
    let mut h = HeaderMap::new();
    h.insert("authorization", "Bearer s3cret".parse().unwrap());
    h.insert("cookie", "a=b".parse().unwrap());
    h.insert("accept", "*/*".parse().unwrap());
    let masked = headers(&h, false);
    assert!(masked.contains(&("authorization".into(), MASKED.into())));
    assert!(masked.contains(&("cookie".into(), MASKED.into())));
    assert!(masked.contains(&("accept".into(), "*/*".into())));
    let kept = headers(&h, true);
    assert!(kept.contains(&("authorization".into(), "Bearer s3cret".into())));
}

#[test]
fn prefixes_keep_only_the_start() {
    let mut p = Prefix::new(5);
    p.see(b"abc");
    p.see(b"defgh");
    p.see(b"ij");
    let kept = p.finish();
    assert_eq!(
        (&kept.bytes[..], kept.truncated, kept.total),
        (&b"abcde"[..], true, 10)
    );
    let mut p = Prefix::new(5);
    p.see(b"abcde");
    assert!(!p.finish().truncated);
}

#[test]
fn bodies_are_text_or_base64_in_json() {
    let text = BodyPrefix {
        bytes: "héllo".into(),
        truncated: false,
        total: 6,
    };
    let v = serde_json::to_value(&text).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"encoding": "utf8", "data": "héllo", "truncated": false, "total": 6})
    );
    let binary = BodyPrefix {
        bytes: vec![0xff, 0, 1].into(),
        truncated: true,
        total: 9,
    };
    let v = serde_json::to_value(&binary).unwrap();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["data"], "/wAB");
}

#[tokio::test]
async fn the_inspector_tells_subscribers_of_new_entries() {
    let inspector = Inspector::new(Settings::default());
    let mut feed = inspector.subscribe();
    let kept = inspector.record(entry("api", 200, 1));
    let got = feed.recv().await.unwrap();
    assert_eq!((got.id, kept.id), (1, 1));
    assert_eq!(inspector.usage().0, 1);
}
