use super::*;

fn capture(secrets: bool) -> Capture {
    Capture::new(Ends {
        service: "api".into(),
        version: "1.0.0".into(),
        provider: "A".into(),
        consumer: "B".into(),
        secrets,
    })
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_request_and_its_response_make_one_entry() {
    let now = SystemTime::now();
    let mut c = capture(false);
    let req = format!(
        "POST /x?y=1 HTTP/1.1\r\nhost: localhost:3000\r\nauthorization: Bearer s\r\ntraceparent: {TP}\r\ncontent-length: 5\r\n\r\nhel"
    );
    c.on_consumer(req.as_bytes(), now);
    c.on_consumer(b"lo", now);
    assert!(
        c.on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab", now)
            .is_none()
    );
    let e = c.on_backend(b"cd", now).expect("the response ended");
    assert_eq!(
        (e.method.as_str(), e.url.as_str(), e.status),
        ("POST", "/x?y=1", 200)
    );
    assert_eq!(e.side, Side::Provider);
    assert_eq!(e.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(&e.request_body.bytes[..], b"hello");
    assert_eq!(&e.response_body.bytes[..], b"abcd");
    assert!(
        e.request_headers
            .contains(&("authorization".into(), "<masked>".into()))
    );
    assert!(
        e.request_headers
            .contains(&("host".into(), "localhost:3000".into()))
    );
    assert_eq!((e.consumer.as_str(), e.route.as_str()), ("B", "tunnel"));

    // The next request on the same stream, with a head split across reads.
    c.on_consumer(b"GET /two HTTP/1.1\r\nho", now);
    c.on_consumer(b"st: x\r\n\r\n", now);
    c.on_backend(b"HTTP/1.1 404 Not", now);
    let e = c
        .on_backend(
            b" Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            now,
        )
        .expect("the chunked response ended");
    assert_eq!((e.url.as_str(), e.status), ("/two", 404));
    assert_eq!(
        &e.response_body.bytes[..],
        b"abc",
        "the data, without the framing"
    );
    assert!(!e.response_body.truncated);
}

#[test]
fn bodies_keep_only_their_prefix_and_secrets_stay_when_asked() {
    let now = SystemTime::now();
    let mut c = capture(true);
    let big = 200 * 1024;
    let head = format!("PUT / HTTP/1.1\r\ncookie: a=b\r\ncontent-length: {big}\r\n\r\n");
    c.on_consumer(head.as_bytes(), now);
    let chunk = vec![b'x'; 8192];
    for _ in 0..big / chunk.len() {
        c.on_consumer(&chunk, now);
    }
    c.on_backend(b"HTTP/1.1 201 Created\r\n\r\n", now);
    let e = c
        .on_close(now)
        .expect("a response until close ends with the stream");
    assert_eq!(e.request_body.bytes.len(), BODY_PREFIX);
    assert!(e.request_body.truncated);
    assert_eq!(e.request_body.total, big as u64);
    assert_eq!(e.status, 201);
    assert!(e.request_headers.contains(&("cookie".into(), "a=b".into())));
}

#[test]
fn an_early_response_waits_for_the_rest_of_the_request_and_garbage_turns_it_off() {
    let now = SystemTime::now();
    let mut c = capture(false);
    c.on_consumer(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\n12345", now);
    let e = c
        .on_backend(b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n", now)
        .unwrap();
    assert_eq!(e.status, 413);
    c.on_consumer(b"67890", now);
    c.on_consumer(b"HEAD / HTTP/1.1\r\n\r\n", now);
    let e = c
        .on_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", now)
        .expect("a HEAD response has no body");
    assert_eq!(e.method, "HEAD");

    let mut off = capture(false);
    off.on_consumer(b"\x16\x03\x01 not http", now);
    assert!(off.on_backend(b"HTTP/1.1 200 OK\r\n\r\n", now).is_none());
    assert!(off.on_close(now).is_none());
}

#[test]
fn a_protocol_switch_ends_the_capture() {
    let now = SystemTime::now();
    let mut c = capture(false);
    c.on_consumer(
        b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        now,
    );
    let e = c
        .on_backend(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x01a", now)
        .unwrap();
    assert_eq!(e.status, 101);
    c.on_consumer(b"GET / HTTP/1.1\r\n\r\n", now);
    assert!(c.on_backend(b"HTTP/1.1 200 OK\r\n\r\n", now).is_none());
}
