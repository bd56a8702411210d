//! One captured request ([`Entry`]) and its JSON forms: in full, and the
//! [`Summary`] a listing shows.

use bytes::Bytes;
use http::HeaderMap;
use serde::{Serialize, ser::SerializeStruct as _};

use super::MASKED;

/// Which end of a request an entry was captured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Side {
    /// The caller's node: the request as the client sent it.
    Caller,
    /// The provider's node: the request as its backend received it.
    Provider,
}

/// The kept start of a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyPrefix {
    /// At most [`super::BODY_PREFIX`] bytes.
    pub bytes: Bytes,
    /// The body was longer than what is kept.
    pub truncated: bool,
    /// The body's whole length, as far as it was seen.
    pub total: u64,
}

impl BodyPrefix {
    /// The kept bytes as text, when they are UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// `{"encoding": "utf8"|"base64", "data": …, "truncated": …, "total": …}`.
impl Serialize for BodyPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BodyPrefix", 4)?;
        match self.text() {
            Some(text) => {
                st.serialize_field("encoding", "utf8")?;
                st.serialize_field("data", text)?;
            }
            None => {
                st.serialize_field("encoding", "base64")?;
                st.serialize_field("data", &data_encoding::BASE64.encode(&self.bytes))?;
            }
        }
        st.serialize_field("truncated", &self.truncated)?;
        st.serialize_field("total", &self.total)?;
        st.end()
    }
}

/// How long a request took, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From arrival until the response body ended.
    pub duration_ms: f64,
    /// From arrival until the response head was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_head_ms: Option<f64>,
    /// Routing and choosing the providers (caller side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_ms: Option<f64>,
}

/// One captured request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Increasing id, unique on this node.
    pub id: u64,
    pub side: Side,
    /// Arrival, RFC 3339 UTC.
    pub time: String,
    pub method: String,
    /// As the client sent it (caller side) or the backend got it.
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub request_body: BodyPrefix,
    /// 0 when no response came.
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: BodyPrefix,
    /// `unknown` when the request named no service the mesh has.
    pub service: String,
    /// The provider's version, when known.
    pub version: String,
    /// The provider's peer id (empty when none served).
    pub provider: String,
    /// Provider side: the caller's peer id.
    pub consumer: String,
    /// `local`, `direct`, `relayed`, `none`; `tunnel` on the provider side.
    pub route: String,
    pub timings: Timings,
    /// The W3C trace id, 32 hex digits (shared by both sides).
    pub trace_id: String,
}

impl Entry {
    /// The bytes this entry counts for in the buffer's budget.
    pub(super) fn size(&self) -> usize {
        let headers =
            |h: &[(String, String)]| h.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>();
        self.url.len()
            + headers(&self.request_headers)
            + headers(&self.response_headers)
            + self.request_body.bytes.len()
            + self.response_body.bytes.len()
            + 256
    }

    /// What a listing shows of it.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            id: self.id,
            side: self.side,
            time: &self.time,
            method: &self.method,
            url: &self.url,
            status: self.status,
            service: &self.service,
            version: &self.version,
            provider: &self.provider,
            route: &self.route,
            duration_ms: self.timings.duration_ms,
            request_bytes: self.request_body.total,
            response_bytes: self.response_body.total,
            trace_id: &self.trace_id,
        }
    }
}

/// An entry as a listing shows it.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub id: u64,
    pub side: Side,
    pub time: &'a str,
    pub method: &'a str,
    pub url: &'a str,
    pub status: u16,
    pub service: &'a str,
    pub version: &'a str,
    pub provider: &'a str,
    pub route: &'a str,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub trace_id: &'a str,
}

/// Whether a header's value is a secret.
pub(crate) fn is_secret(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization")
        || name.eq_ignore_ascii_case("cookie")
        || name.eq_ignore_ascii_case("set-cookie")
}

/// A header as an entry keeps it: its value masked when it is a secret,
/// unless `secrets`.
pub(crate) fn header_pair(name: &str, value: &[u8], secrets: bool) -> (String, String) {
    let value = if !secrets && is_secret(name) {
        MASKED.to_owned()
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    (name.to_ascii_lowercase(), value)
}

/// The headers of a request or response as an entry keeps them: secrets
/// masked unless `secrets`.
pub fn headers(h: &HeaderMap, secrets: bool) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| header_pair(k.as_str(), v.as_bytes(), secrets))
        .collect()
}
