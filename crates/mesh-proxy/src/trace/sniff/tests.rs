use std::time::{Duration, SystemTime};

use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn request(method: &str) -> Vec<u8> {
    format!("{method} /a?b HTTP/1.1\r\nhost: localhost:3000\r\ntraceparent: {TP}\r\ntracestate: k=v\r\n\r\n")
        .into_bytes()
}

fn sniffer() -> Sniffer {
    Sniffer::new("api".into(), "12D3KooWB".into())
}

/// The parent id the backend receives in `head`.
fn parent_sent(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let tp = text
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap();
    tp.split('-').nth(2).unwrap().to_owned()
}

#[test]
fn a_traced_request_gets_a_server_span_parented_by_the_client_span() {
    let mut s = sniffer();
    let mut head = request("GET");
    let len = head.len();
    s.on_consumer(&mut head, at(0));
    assert_eq!(head.len(), len, "nothing moves");
    let server = parent_sent(&head);
    assert_ne!(
        server, "00f067aa0ba902b7",
        "the backend's parent is the server span"
    );
    assert!(String::from_utf8_lossy(&head).contains("tracestate: k=v\r\n"));
    assert!(
        s.on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345", at(5))
            .is_none()
    );
    let span = s.on_backend(b"67890", at(9)).expect("the response ended");
    assert_eq!(span.span_id.to_string(), server);
    assert_eq!(span.parent.unwrap().to_string(), "00f067aa0ba902b7");
    assert_eq!(
        span.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        (span.kind, span.start, span.end),
        (Kind::Server, at(0), at(9))
    );
    assert!(
        span.attributes
            .contains(&("http.response.status_code", Value::Int(200)))
    );
    assert!(
        span.attributes
            .contains(&("devmesh.backend.first_byte_us", Value::Int(5000)))
    );
    assert!(!span.error);

    // The next request on the same stream is traced too.
    let mut head = request("POST");
    s.on_consumer(&mut head, at(20));
    s.on_consumer(&mut b"body bytes".to_vec(), at(21));
    let chunked =
        b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r";
    assert!(s.on_backend(chunked, at(30)).is_none());
    let span = s
        .on_backend(b"\n\r\n", at(31))
        .expect("the last chunk ended it");
    assert_eq!(span.end, at(31));
    assert!(span.error);
    assert_eq!(span.name, "POST api");
}

#[test]
fn interim_heads_bodiless_responses_and_closes_end_spans_right() {
    let mut s = sniffer();
    s.on_consumer(&mut request("HEAD"), at(0));
    let span = s.on_backend(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
        at(1),
    );
    assert!(span.is_some(), "a HEAD response has no body");

    s.on_consumer(&mut request("GET"), at(2));
    assert!(
        s.on_backend(b"HTTP/1.1 200 OK\r\n\r\nstreamed until close", at(3))
            .is_none()
    );
    let span = s.on_close(at(8)).expect("closing ends it");
    assert_eq!(span.end, at(8));
    assert!(s.on_close(at(9)).is_none());
}

#[test]
fn untraced_or_unparsable_streams_are_left_alone() {
    let mut s = sniffer();
    let mut plain = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    let before = plain.clone();
    s.on_consumer(&mut plain, at(0));
    assert_eq!(plain, before);
    assert!(
        s.on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", at(1))
            .is_none()
    );
    // Later bytes that look like a traced request are not touched either.
    let mut later = request("GET");
    let copy = later.clone();
    s.on_consumer(&mut later, at(2));
    assert_eq!(later, copy);

    let mut h2 = sniffer();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.on_consumer(&mut preface, at(0));
    assert!(h2.on_close(at(1)).is_none());

    let mut split = sniffer();
    let mut half = request("GET")[..20].to_vec();
    split.on_consumer(&mut half, at(0));
    assert!(split.on_close(at(1)).is_none());
}

#[test]
fn chunked_ends_are_found_across_reads() {
    let mut f = Framing::Chunked([0; 5]);
    for piece in [&b"3\r\nabc\r\n"[..], b"0", b"\r", b"\n\r"] {
        f = next_framing(f, piece).unwrap();
    }
    assert_eq!(next_framing(f, b"\n"), None);
    assert_eq!(next_framing(Framing::Length(3), b"abc"), None);
    assert_eq!(
        next_framing(Framing::Length(5), b"abc"),
        Some(Framing::Length(2))
    );
}

#[test]
fn unsampled_traces_get_no_span_but_keep_the_stream_tracked() {
    let mut s = sniffer();
    let mut head = request("GET");
    let text = String::from_utf8(head.clone())
        .unwrap()
        .replace("-01\r\n", "-00\r\n");
    head = text.into_bytes();
    s.on_consumer(&mut head, at(0));
    assert_ne!(parent_sent(&head), "00f067aa0ba902b7");
    assert!(
        s.on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", at(1))
            .is_none()
    );
    s.on_consumer(&mut request("GET"), at(2));
    assert!(
        s.on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", at(3))
            .is_some()
    );
}
