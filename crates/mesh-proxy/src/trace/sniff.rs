//! The requests of a provider's tunnel, found in the bytes it splices, so
//! that the provider records a server span for each: the pure part.
//!
//! A provider does not parse HTTP: it splices a tunnel stream to its
//! backend. For tracing it looks at the request and response heads as
//! they pass (HTTP/1.1 only: an HTTP/2 tunnel, or anything that does not
//! parse, turns the sniffer off for that stream). At a request boundary,
//! a request head with a valid `traceparent` starts a server span: a new
//! span id is written over the parent id in the head itself (same length,
//! so nothing moves), and the backend sees devmesh's server span as its
//! parent. The response head gives the status and the framing
//! (`Content-Length`, chunked, or until close); the span ends with the
//! response's last byte. A head split across two reads is not traced, and
//! a trace the caller does not sample (flag 00) gets no span, though its
//! parent id is still replaced.

use std::time::SystemTime;

use super::{
    Kind, SpanRecord, Value,
    context::{PARENT_OFFSET, SpanId, TRACEPARENT, TRACEPARENT_LEN, TraceParent, encode_hex},
};

/// Most headers looked at in a head.
pub(crate) const MAX_HEADERS: usize = 64;
/// The end of a chunked body with no trailers.
const LAST_CHUNK: &[u8; 5] = b"0\r\n\r\n";

/// A request whose response has not ended.
#[derive(Debug)]
struct Pending {
    trace: TraceParent,
    span: SpanId,
    start: SystemTime,
    method: String,
    path: String,
    status: u16,
    first_byte: Option<SystemTime>,
    head_request: bool,
}

/// How the response's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many body bytes are still to come.
    Length(u64),
    /// Chunked: ends with a last chunk; the last bytes seen so far.
    Chunked([u8; 5]),
    /// Ends when the stream closes.
    UntilClose,
}

#[derive(Debug)]
enum State {
    /// At a request boundary.
    Idle,
    /// A traced request was seen; its response head has not.
    Requested(Pending),
    /// A traced response is streaming.
    Responding(Pending, Framing),
    /// An untraced request is in flight: wait for the next boundary the
    /// traced path would find, which cannot be known; stay off.
    Off,
}

/// Finds the requests of one tunnel stream.
#[derive(Debug)]
pub struct Sniffer {
    state: State,
    /// The service the tunnel is for, and the consumer's peer id.
    service: String,
    consumer: String,
}

impl Sniffer {
    pub fn new(service: String, consumer: String) -> Self {
        Self {
            state: State::Idle,
            service,
            consumer,
        }
    }

    /// Bytes from the consumer, about to go to the backend; a traced
    /// request head gets the server span's id as its parent.
    pub fn on_consumer(&mut self, bytes: &mut [u8], now: SystemTime) {
        if !matches!(self.state, State::Idle) {
            // Body bytes of the request in flight, or not traced.
            return;
        }
        self.state = match start_request(bytes, now) {
            Some(pending) => State::Requested(pending),
            None => State::Off,
        };
    }

    /// Bytes from the backend, about to go to the consumer; returns the
    /// server span when they end a traced response.
    pub fn on_backend(&mut self, bytes: &[u8], now: SystemTime) -> Option<SpanRecord> {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Requested(mut pending) => {
                // A head that does not parse leaves the sniffer off.
                let (head_len, framing) = response_head(bytes, &mut pending)?;
                pending.first_byte = Some(now);
                self.advance(pending, framing, &bytes[head_len..], now)
            }
            State::Responding(pending, framing) => self.advance(pending, framing, bytes, now),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The stream closed: a response still streaming ends here.
    pub fn on_close(&mut self, now: SystemTime) -> Option<SpanRecord> {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Responding(pending, _) | State::Requested(pending) => self.record(pending, now),
            _ => None,
        }
    }

    fn advance(
        &mut self,
        pending: Pending,
        framing: Framing,
        body: &[u8],
        now: SystemTime,
    ) -> Option<SpanRecord> {
        match next_framing(framing, body) {
            Some(framing) => {
                self.state = State::Responding(pending, framing);
                None
            }
            None => {
                self.state = State::Idle;
                self.record(pending, now)
            }
        }
    }

    /// The server span of `p`, ended at `end`; none for a trace the caller
    /// does not sample.
    fn record(&self, p: Pending, end: SystemTime) -> Option<SpanRecord> {
        if p.trace.flags & 1 == 0 {
            return None;
        }
        let mut attributes = vec![
            ("http.request.method", Value::Text(p.method.clone())),
            ("url.path", Value::Text(p.path)),
            ("devmesh.service", Value::Text(self.service.clone())),
            ("devmesh.consumer", Value::Text(self.consumer.clone())),
        ];
        if p.status != 0 {
            attributes.push(("http.response.status_code", Value::Int(i64::from(p.status))));
        }
        if let Some(first) = p.first_byte {
            let ms = first
                .duration_since(p.start)
                .unwrap_or_default()
                .as_micros() as i64;
            attributes.push(("devmesh.backend.first_byte_us", Value::Int(ms)));
        }
        Some(SpanRecord {
            trace_id: p.trace.trace_id,
            span_id: p.span,
            parent: Some(p.trace.parent),
            name: format!("{} {}", p.method, self.service),
            kind: Kind::Server,
            start: p.start,
            end,
            attributes,
            error: p.status == 0 || p.status >= 500,
        })
    }
}

/// A request head at the start of `bytes` with a valid `traceparent`: the
/// pending server span, its id written over the header's parent id.
fn start_request(bytes: &mut [u8], now: SystemTime) -> Option<Pending> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(bytes) else {
        return None;
    };
    let (method, path) = (req.method?.to_owned(), req.path?.to_owned());
    let value = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(TRACEPARENT))?
        .value;
    let trace = TraceParent::parse(value).ok()?;
    if value.len() != TRACEPARENT_LEN || !value.starts_with(b"00-") {
        return None;
    }
    let at = value.as_ptr() as usize - bytes.as_ptr() as usize + PARENT_OFFSET;
    let span = SpanId::random();
    encode_hex(&span.0, &mut bytes[at..at + 16]);
    Some(Pending {
        trace,
        span,
        start: now,
        head_request: method == "HEAD",
        method,
        path,
        status: 0,
        first_byte: None,
    })
}

/// The length and framing of the final response head at the start of
/// `bytes` (interim 1xx heads before it skipped); sets the status.
fn response_head(bytes: &[u8], pending: &mut Pending) -> Option<(usize, Framing)> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = resp.parse(&bytes[offset..]) else {
            return None;
        };
        let status = resp.code?;
        if (100..200).contains(&status) && status != 101 {
            offset += len;
            continue;
        }
        pending.status = status;
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let no_body = pending.head_request || matches!(status, 101 | 204 | 304);
        let framing = if no_body {
            Framing::Length(0)
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
            Framing::Chunked([0; 5])
        } else if let Some(len) = header("content-length") {
            Framing::Length(std::str::from_utf8(len).ok()?.trim().parse().ok()?)
        } else {
            Framing::UntilClose
        };
        return Some((offset + len, framing));
    }
}

/// The framing after `body` bytes more, `None` once the response ended.
fn next_framing(framing: Framing, body: &[u8]) -> Option<Framing> {
    match framing {
        Framing::Length(left) => {
            let left = left.saturating_sub(body.len() as u64);
            (left > 0).then_some(Framing::Length(left))
        }
        Framing::Chunked(mut tail) => {
            let n = LAST_CHUNK.len();
            if body.len() >= n {
                tail.copy_from_slice(&body[body.len() - n..]);
            } else {
                tail.rotate_left(body.len());
                tail[n - body.len()..].copy_from_slice(body);
            }
            (&tail != LAST_CHUNK).then_some(Framing::Chunked(tail))
        }
        Framing::UntilClose => Some(Framing::UntilClose),
    }
}

#[cfg(test)]
mod tests;
