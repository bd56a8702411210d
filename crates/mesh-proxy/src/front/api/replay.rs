//! `POST /api/requests/{id}/replay`: a caller-side entry sent again
//! through this node's own front door, so the normal pipeline routes it
//! (routing rules, `X-DevMesh-Require`, a pinned peer with
//! `X-DevMesh-Peer`), optionally edited; the answer holds both responses
//! and their diff.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::debug;

use super::gone;
use crate::{
    PEER_HEADER, Proxy, REQUIRE_HEADER,
    front::{observe::Observed, own},
    inspect::{BODY_PREFIX, BodyPrefix, Entry, Inspector, MASKED, Prefix, Side, diff},
    trace,
};

/// Largest replay request (its JSON, with a body in base64).
const MAX_ASK: usize = 16 << 20;
/// How long the replayed request may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the new entry may take to show once its response ended.
const ENTRY_WAIT: Duration = Duration::from_secs(2);

/// Headers a replay does not copy: hop-by-hop, framing (the body is new),
/// the trace (a replay is a trace of its own) and devmesh's own.
const NOT_COPIED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "traceparent",
    "tracestate",
    "x-devmesh-peer",
    "x-devmesh-require",
    "expect",
];

/// What a replay changes.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Edits {
    /// Pin the replay to this provider.
    pub to_peer: Option<String>,
    /// A version requirement, as `X-DevMesh-Require`.
    pub require: Option<String>,
    /// Headers to set (replacing ones of the same name).
    pub set_headers: Vec<(String, String)>,
    /// A new body.
    pub body_base64: Option<String>,
}

/// The request a replay sends, and what it could not copy.
pub(super) fn request(
    original: &Entry,
    edits: &Edits,
) -> Result<(Request<Full<Bytes>>, Vec<String>), String> {
    let mut warnings = Vec::new();
    let method = Method::from_bytes(original.method.as_bytes())
        .map_err(|_| format!("the entry's method {:?} is invalid", original.method))?;
    let mut req = Request::builder()
        .method(method)
        .uri(&original.url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("the entry's URL {:?} is invalid: {e}", original.url))?;
    let headers = req.headers_mut();
    for (name, value) in &original.request_headers {
        if NOT_COPIED.contains(&name.as_str()) {
            continue;
        }
        if value == MASKED {
            warnings.push(format!("{name} was masked in the capture and is not sent; pass it with set_headers (or run devmeshd with --inspect-secrets)"));
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    for (name, value) in &edits.set_headers {
        let n = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let v = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of {name} is not a valid header value"))?;
        headers.insert(n, v);
    }
    if let Some(require) = &edits.require {
        let v = HeaderValue::from_str(require.trim())
            .map_err(|_| format!("{require:?} is not a version requirement such as ^2"))?;
        headers.insert(REQUIRE_HEADER, v);
    }
    if let Some(peer) = &edits.to_peer {
        let _: mesh_core::PeerId = peer
            .trim()
            .parse()
            .map_err(|_| format!("{peer:?} is not a peer id; `devmesh peers` lists them"))?;
        headers.insert(
            PEER_HEADER,
            HeaderValue::from_str(peer.trim()).map_err(|e| e.to_string())?,
        );
    }
    let body = match &edits.body_base64 {
        Some(b64) => Bytes::from(
            data_encoding::BASE64
                .decode(b64.trim().as_bytes())
                .map_err(|e| format!("body_base64 is not base64: {e}"))?,
        ),
        None => {
            if original.request_body.truncated {
                warnings.push(format!(
                    "the original body had {} bytes; only the first {} were kept and are sent",
                    original.request_body.total,
                    original.request_body.bytes.len()
                ));
            }
            original.request_body.bytes.clone()
        }
    };
    *req.body_mut() = Full::new(body);
    Ok((req, warnings))
}

/// A response as the replay answer shows it.
fn side(status: u16, headers: &[(String, String)], body: &BodyPrefix) -> serde_json::Value {
    serde_json::json!({ "status": status, "headers": headers, "body": body })
}

/// A response received by the replay.
struct Replayed {
    status: u16,
    headers: Vec<(String, String)>,
    body: BodyPrefix,
    trace_id: String,
}

impl Proxy {
    pub(super) async fn replay(
        &self,
        inspector: &Inspector,
        id: u64,
        req: Request<Incoming>,
    ) -> Response<Observed> {
        let Some(original) = inspector.get(id) else {
            return gone(id);
        };
        if original.side != Side::Caller {
            return own::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "entry {id} is a provider's side; replay the caller's entry (the one on the node the request came in on)"
                ),
            );
        }
        let edits = match read_edits(req).await {
            Ok(edits) => edits,
            Err(e) => return own::error(StatusCode::BAD_REQUEST, e),
        };
        let (out, warnings) = match request(&original, &edits) {
            Ok(pair) => pair,
            Err(e) => return own::error(StatusCode::BAD_REQUEST, e),
        };
        let Some(addr) = self.front_addr.get().copied() else {
            return own::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the front door is not listening",
            );
        };
        let replayed = match tokio::time::timeout(
            REPLAY_TIMEOUT,
            send(addr, out, inspector.secrets()),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return own::error(StatusCode::BAD_GATEWAY, format!("sending the replay: {e}"));
            }
            Err(_) => {
                return own::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the replay got no whole response within {REPLAY_TIMEOUT:?}"),
                );
            }
        };
        let new_id = new_entry(inspector, &replayed.trace_id).await;
        let before = diff::render(
            original.status,
            &original.response_headers,
            &original.response_body,
        );
        let after = diff::render(replayed.status, &replayed.headers, &replayed.body);
        let mut answer = serde_json::json!({
            "original": side(original.status, &original.response_headers, &original.response_body),
            "replayed": side(replayed.status, &replayed.headers, &replayed.body),
            "diff": diff::unified(&before, &after),
            "warnings": warnings,
        });
        answer["original"]["id"] = id.into();
        answer["replayed"]["id"] = new_id.map_or(serde_json::Value::Null, Into::into);
        answer["replayed"]["trace_id"] = replayed.trace_id.into();
        own::json(StatusCode::OK, &answer)
    }
}

/// The JSON body of a replay request (empty: replay as it was).
async fn read_edits(req: Request<Incoming>) -> Result<Edits, String> {
    let body = Limited::new(req.into_body(), MAX_ASK)
        .collect()
        .await
        .map_err(|e| format!("reading the replay request: {e}"))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Edits::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        format!("the replay request is not valid: {e}; send {{\"to_peer\"?, \"require\"?, \"set_headers\"?: [[\"K\",\"V\"]], \"body_base64\"?}}")
    })
}

/// Sends `req` to the front door at `addr` and keeps the start of the
/// response body (the rest is read and dropped).
async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    secrets: bool,
) -> Result<Replayed, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "replay connection ended with an error");
        }
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = crate::inspect::headers(resp.headers(), secrets);
    let trace_id = (resp.headers().get(trace::TRACE_ID_HEADER))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = resp.into_body();
    let mut prefix = Prefix::new(BODY_PREFIX);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the replayed response: {e}"))?;
        if let Some(data) = frame.data_ref() {
            prefix.see(data);
        }
    }
    Ok(Replayed {
        status,
        headers,
        body: prefix.finish(),
        trace_id,
    })
}

/// The id of the replay's own entry, once its response has been recorded.
async fn new_entry(inspector: &Inspector, trace_id: &str) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + ENTRY_WAIT;
    loop {
        if let Some(e) = inspector.by_trace(trace_id, Side::Caller) {
            return Some(e.id);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Timings;

    fn entry() -> Entry {
        Entry {
            id: 7,
            side: Side::Caller,
            time: String::new(),
            method: "POST".into(),
            url: "/orders?x=1".into(),
            request_headers: vec![
                ("host".into(), "api.localhost:7700".into()),
                ("authorization".into(), MASKED.into()),
                ("content-length".into(), "3".into()),
                ("traceparent".into(), "00-…".into()),
                ("accept".into(), "*/*".into()),
            ],
            request_body: BodyPrefix {
                bytes: Bytes::from_static(b"abc"),
                truncated: false,
                total: 3,
            },
            status: 200,
            response_headers: vec![],
            response_body: BodyPrefix::default(),
            service: "api".into(),
            version: "1.0.0".into(),
            provider: String::new(),
            consumer: String::new(),
            route: "local".into(),
            timings: Timings::default(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn a_replay_copies_the_request_without_secrets_framing_or_trace() {
        let (req, warnings) = request(&entry(), &Edits::default()).unwrap();
        assert_eq!(
            (req.method(), req.uri().to_string().as_str()),
            (&Method::POST, "/orders?x=1")
        );
        let h = req.headers();
        assert_eq!(h["host"], "api.localhost:7700");
        assert_eq!(h["accept"], "*/*");
        for gone in ["authorization", "content-length", "traceparent"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("authorization was masked"),
            "{warnings:?}"
        );
    }

    #[test]
    fn edits_set_headers_requirement_peer_and_body() {
        let peer = mesh_core::PeerId::random().to_string();
        let edits = Edits {
            to_peer: Some(peer.clone()),
            require: Some("^2".into()),
            set_headers: vec![("Accept".into(), "text/plain".into())],
            body_base64: Some("aGk=".into()),
        };
        let (req, _) = request(&entry(), &edits).unwrap();
        let h = req.headers();
        assert_eq!(h["accept"], "text/plain");
        assert_eq!(h["x-devmesh-require"], "^2");
        assert_eq!(h["x-devmesh-peer"], peer.as_str());
        let bad = Edits {
            to_peer: Some("nobody".into()),
            ..Edits::default()
        };
        assert!(
            request(&entry(), &bad)
                .unwrap_err()
                .contains("not a peer id")
        );
        let bad = Edits {
            body_base64: Some("!!".into()),
            ..Edits::default()
        };
        assert!(request(&entry(), &bad).unwrap_err().contains("not base64"));
    }
}
