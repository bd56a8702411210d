//! A provider's requests found in the bytes of its splice, captured as the
//! backend received them (after the consumer's rewrites and the server
//! span's `traceparent`) with the backend's response: the pure part.
//!
//! HTTP/1.1 only, one request at a time (what devmesh's consumers send):
//! a request head (gathered across reads, at most [`MAX_HEAD`]), its body
//! by `Content-Length` or chunked framing, the response head (interim 1xx
//! skipped) and its body by its framing or until the stream closes. Only
//! the first [`BODY_PREFIX`](super::BODY_PREFIX) bytes of each body's data
//! are copied (a chunked body without its framing). Anything that does not parse, and whatever follows a protocol
//! switch (101), turns the capture off for that stream.

use std::time::SystemTime;

use bytes::BytesMut;

use super::{BODY_PREFIX, Entry, Prefix, Side, Timings, chunked::Dechunk, entry::header_pair};
use crate::{
    reqlog,
    trace::{context::TRACEPARENT, sniff::MAX_HEADERS},
};

/// Most bytes of a head gathered across reads.
pub(crate) const MAX_HEAD: usize = 64 << 10;

/// How a body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Dechunk),
    /// Until the stream closes.
    UntilClose,
}

impl Framing {
    /// Feeds body bytes into `prefix`: `Some(true)` once the body ended,
    /// `None` when it is malformed.
    fn feed(&mut self, bytes: &[u8], prefix: &mut Prefix) -> Option<bool> {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                prefix.see(&bytes[..n as usize]);
                *left -= n;
                Some(*left == 0)
            }
            Framing::Chunked(d) => d.feed(bytes, |data| prefix.see(data)).ok(),
            Framing::UntilClose => {
                prefix.see(bytes);
                Some(false)
            }
        }
    }
}

/// Who a tunnel is between.
#[derive(Debug, Clone)]
pub struct Ends {
    pub service: String,
    pub version: String,
    /// This node's peer id.
    pub provider: String,
    /// The caller's peer id.
    pub consumer: String,
    pub secrets: bool,
}

/// A request whose response has not ended.
#[derive(Debug)]
struct Flight {
    start: SystemTime,
    method: String,
    url: String,
    request_headers: Vec<(String, String)>,
    trace_id: String,
    head_request: bool,
    request: Prefix,
    /// `None` once the request body ended.
    request_left: Option<Framing>,
    response: Response,
}

#[derive(Debug)]
enum Response {
    /// The start of the response head so far.
    Head(BytesMut),
    Body {
        status: u16,
        headers: Vec<(String, String)>,
        head_at: SystemTime,
        prefix: Prefix,
        left: Framing,
    },
}

#[derive(Debug)]
enum State {
    /// At a request boundary; the start of a request head so far.
    Idle(BytesMut),
    InFlight(Box<Flight>),
    /// The response ended before the request's body: the rest of it.
    Draining(Framing),
    Off,
}

/// Captures the requests of one tunnel stream.
#[derive(Debug)]
pub struct Capture {
    ends: Ends,
    state: State,
}

/// A response head: status, headers and body framing.
type ResponseHead = (u16, Vec<(String, String)>, Framing);

/// What a head parse found.
enum Parsed<T> {
    Complete(T, usize),
    Partial,
    Invalid,
}

impl Capture {
    pub fn new(ends: Ends) -> Self {
        Self {
            ends,
            state: State::Idle(BytesMut::new()),
        }
    }

    /// Bytes from the consumer, as they go to the backend.
    pub fn on_consumer(&mut self, bytes: &[u8], now: SystemTime) {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Idle(mut head) => {
                let fresh = head.is_empty();
                let parsed = if fresh {
                    self.request_head(bytes, now)
                } else {
                    head.extend_from_slice(bytes);
                    self.request_head(&head, now)
                };
                self.state = match parsed {
                    Parsed::Complete(mut flight, len) => {
                        let consumed_before = head.len().saturating_sub(bytes.len());
                        let body_at = len.saturating_sub(consumed_before);
                        match flight_request_body(&mut flight, &bytes[body_at.min(bytes.len())..]) {
                            Some(()) => State::InFlight(flight),
                            None => State::Off,
                        }
                    }
                    Parsed::Partial if head.len().max(bytes.len()) <= MAX_HEAD => {
                        if fresh {
                            head.extend_from_slice(bytes);
                        }
                        State::Idle(head)
                    }
                    Parsed::Partial | Parsed::Invalid => State::Off,
                };
            }
            State::InFlight(mut flight) => {
                if flight_request_body(&mut flight, bytes).is_some() {
                    self.state = State::InFlight(flight);
                }
            }
            State::Draining(mut left) => {
                self.state = match left.feed(bytes, &mut Prefix::new(0)) {
                    Some(false) => State::Draining(left),
                    Some(true) => State::Idle(BytesMut::new()),
                    None => State::Off,
                };
            }
            State::Off => {}
        }
    }

    /// Bytes from the backend, as they go to the consumer; the entry when
    /// they end a response.
    pub fn on_backend(&mut self, bytes: &[u8], now: SystemTime) -> Option<Entry> {
        let mut flight = match std::mem::replace(&mut self.state, State::Off) {
            State::InFlight(flight) => flight,
            other => {
                // Not a response this capture follows.
                self.state = other;
                return None;
            }
        };
        let body = match &mut flight.response {
            Response::Head(head) => {
                let fresh = head.is_empty();
                let parsed = if fresh {
                    response_head(bytes, flight.head_request, self.ends.secrets)
                } else {
                    head.extend_from_slice(bytes);
                    response_head(head, flight.head_request, self.ends.secrets)
                };
                match parsed {
                    Parsed::Complete((status, headers, left), len) => {
                        let consumed_before = head.len().saturating_sub(bytes.len());
                        let body_at = len.saturating_sub(consumed_before).min(bytes.len());
                        flight.response = Response::Body {
                            status,
                            headers,
                            head_at: now,
                            prefix: Prefix::new(BODY_PREFIX),
                            left,
                        };
                        if status == 101 {
                            // The stream is another protocol from here on.
                            return Some(self.entry(*flight, now));
                        }
                        &bytes[body_at..]
                    }
                    Parsed::Partial if head.len().max(bytes.len()) <= MAX_HEAD => {
                        if fresh {
                            head.extend_from_slice(bytes);
                        }
                        self.state = State::InFlight(flight);
                        return None;
                    }
                    Parsed::Partial | Parsed::Invalid => return None,
                }
            }
            Response::Body { .. } => bytes,
        };
        let Response::Body { prefix, left, .. } = &mut flight.response else {
            unreachable!("the response head was read above");
        };
        match left.feed(body, prefix) {
            None => None,
            Some(false) => {
                self.state = State::InFlight(flight);
                None
            }
            Some(true) => {
                let request_left = flight.request_left;
                let entry = self.entry(*flight, now);
                self.state = match request_left {
                    Some(left) => State::Draining(left),
                    None => State::Idle(BytesMut::new()),
                };
                Some(entry)
            }
        }
    }

    /// The stream closed: a request in flight ends here.
    pub fn on_close(&mut self, now: SystemTime) -> Option<Entry> {
        match std::mem::replace(&mut self.state, State::Off) {
            State::InFlight(flight) => Some(self.entry(*flight, now)),
            _ => None,
        }
    }

    /// The request head at the start of `bytes`.
    fn request_head(&self, bytes: &[u8], now: SystemTime) -> Parsed<Box<Flight>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Invalid,
        };
        let (Some(method), Some(url)) = (req.method, req.path) else {
            return Parsed::Invalid;
        };
        let trace_id = find(req.headers, TRACEPARENT)
            .and_then(|v| v.get(3..35))
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_default();
        let Some(request_left) = body_framing(req.headers) else {
            return Parsed::Invalid;
        };
        let flight = Flight {
            start: now,
            head_request: method == "HEAD",
            method: method.to_owned(),
            url: url.to_owned(),
            request_headers: pairs(req.headers, self.ends.secrets),
            trace_id,
            request: Prefix::new(BODY_PREFIX),
            request_left: (request_left != Framing::Length(0)).then_some(request_left),
            response: Response::Head(BytesMut::new()),
        };
        Parsed::Complete(Box::new(flight), len)
    }

    fn entry(&self, flight: Flight, end: SystemTime) -> Entry {
        let since = |t: SystemTime| t.duration_since(flight.start).unwrap_or_default();
        let (status, response_headers, head_at, response_body) = match flight.response {
            Response::Head(_) => (0, Vec::new(), None, Prefix::new(0)),
            Response::Body {
                status,
                headers,
                head_at,
                prefix,
                ..
            } => (status, headers, Some(head_at), prefix),
        };
        Entry {
            id: 0,
            side: Side::Provider,
            time: reqlog::time_text(flight.start),
            method: flight.method,
            url: flight.url,
            request_headers: flight.request_headers,
            request_body: flight.request.finish(),
            status,
            response_headers,
            response_body: response_body.finish(),
            service: self.ends.service.clone(),
            version: self.ends.version.clone(),
            provider: self.ends.provider.clone(),
            consumer: self.ends.consumer.clone(),
            route: "tunnel".into(),
            timings: Timings {
                duration_ms: reqlog::millis(since(end)),
                response_head_ms: head_at.map(|t| reqlog::millis(since(t))),
                routing_ms: None,
            },
            trace_id: flight.trace_id,
        }
    }
}

/// Request body bytes of `flight`, while its body lasts; `None` when the
/// body is malformed.
fn flight_request_body(flight: &mut Flight, bytes: &[u8]) -> Option<()> {
    let Some(left) = &mut flight.request_left else {
        return Some(());
    };
    if left.feed(bytes, &mut flight.request)? {
        flight.request_left = None;
    }
    Some(())
}

/// The final response head at the start of `bytes` (interim heads
/// skipped): status, headers and body framing.
fn response_head(bytes: &[u8], head_request: bool, secrets: bool) -> Parsed<ResponseHead> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&bytes[offset..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Invalid,
        };
        let Some(status) = resp.code else {
            return Parsed::Invalid;
        };
        if (100..200).contains(&status) && status != 101 {
            offset += len;
            continue;
        }
        let framing = if head_request || matches!(status, 101 | 204 | 304) {
            Some(Framing::Length(0))
        } else if find(resp.headers, "transfer-encoding").is_none()
            && find(resp.headers, "content-length").is_none()
        {
            Some(Framing::UntilClose)
        } else {
            body_framing(resp.headers)
        };
        let Some(framing) = framing else {
            return Parsed::Invalid;
        };
        return Parsed::Complete(
            (status, pairs(resp.headers, secrets), framing),
            offset + len,
        );
    }
}

/// The framing of a message body by its headers: chunked, a length, or
/// none (length 0); `None` for a length that does not parse.
fn body_framing(headers: &[httparse::Header<'_>]) -> Option<Framing> {
    if find(headers, "transfer-encoding").is_some_and(|v| {
        v.rsplit(|b| *b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    }) {
        return Some(Framing::Chunked(Dechunk::default()));
    }
    match find(headers, "content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(Framing::Length),
        None => Some(Framing::Length(0)),
    }
}

fn find<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn pairs(headers: &[httparse::Header<'_>], secrets: bool) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| header_pair(h.name, h.value, secrets))
        .collect()
}

#[cfg(test)]
#[path = "sniff_tests.rs"]
mod tests;
