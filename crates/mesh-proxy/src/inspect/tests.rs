use super::*;

fn entry(service: &str, status: u16, body: usize) -> Entry {
    Entry {
        id: 0,
        side: Side::Caller,
        time: String::new(),
        method: "GET".into(),
        url: "/".into(),
        request_headers: vec![],
        request_body: String::new(),
        request_truncated: false,
        status,
        response_headers: vec![],
        response_body: "x".repeat(body),
        response_truncated: false,
        service: service.into(),
        provider: String::new(),
        route: "local".into(),
        duration_ms: 0.0,
        trace_id: String::new(),
    }
}

#[test]
fn the_oldest_entries_go_first_by_count() {
    let mut b = Buffer::new(3, 1 << 20);
    for i in 0..5 {
        assert_eq!(b.push(entry("api", 200, i)), i as u64 + 1);
    }
    let ids: Vec<u64> = b.list(&Filter::default()).iter().map(|e| e.id).collect();
    assert_eq!(ids, [5, 4, 3], "newest first");
    assert!(b.get(2).is_none());
    assert_eq!(b.get(4).unwrap().response_body.len(), 3);
}

#[test]
fn the_byte_budget_evicts_and_too_large_entries_are_not_kept() {
    let one = entry("api", 200, 1000).size();
    let mut b = Buffer::new(100, 2 * one + 10);
    b.push(entry("api", 200, 1000));
    b.push(entry("api", 200, 1000));
    b.push(entry("api", 200, 1000));
    assert_eq!(b.usage(), (2, 2 * one));
    let id = b.push(entry("api", 200, 10 * one));
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
    let found = b.list(&f);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].status, 503);
    assert_eq!(status_class("2XX"), Ok(2));
    let err = status_class("404").unwrap_err().to_string();
    assert!(err.contains("use 1xx, 2xx"), "{err}");
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
    let (kept, truncated) = p.finish();
    assert_eq!((&kept[..], truncated), (&b"abcde"[..], true));
    let mut p = Prefix::new(5);
    p.see(b"abcde");
    assert!(!p.finish().1);
}
