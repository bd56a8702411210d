//! The inspector's capture buffer: the most recent requests a node
//! handled, bounded by count and by bytes (10,000 requests and 64 MiB by
//! default), each with its method, URL, headers, the first 64 KiB of each
//! body, status, timings, provider and trace id. Secrets in `Authorization`,
//! `Cookie` and `Set-Cookie` are masked unless the node is told to keep
//! them. Pure: the front door and the provider feed it.

mod capture;

use std::collections::VecDeque;

use http::HeaderMap;
use serde::Serialize;

pub use capture::Prefix;

/// Requests kept by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Bytes kept by default (headers and body prefixes of every entry).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// The part of each body an entry keeps.
pub const BODY_PREFIX: usize = 64 << 10;
/// What a masked header value shows.
pub const MASKED: &str = "<masked>";

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

/// One captured request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Increasing id, unique on this node.
    pub id: u64,
    pub side: Side,
    /// Arrival, RFC 3339 UTC.
    pub time: String,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    /// The first [`BODY_PREFIX`] bytes of the request body, lossy UTF-8.
    pub request_body: String,
    /// The request body was longer than what is kept.
    pub request_truncated: bool,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
    pub response_truncated: bool,
    pub service: String,
    pub provider: String,
    pub route: String,
    pub duration_ms: f64,
    pub trace_id: String,
}

impl Entry {
    /// The bytes this entry counts for in the buffer's budget.
    fn size(&self) -> usize {
        let headers =
            |h: &[(String, String)]| h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.url.len()
            + headers(&self.request_headers)
            + headers(&self.response_headers)
            + self.request_body.len()
            + self.response_body.len()
            + 256
    }
}

/// The headers of a request or response as an entry keeps them: secrets
/// masked unless `secrets`.
pub fn headers(h: &HeaderMap, secrets: bool) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let masked = !secrets
                && matches!(
                    k.as_str(),
                    "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
                );
            let value = if masked {
                MASKED.to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

/// Which entries a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this service.
    pub service: Option<String>,
    /// Only statuses of this class: 1 to 5 (`5xx` is 5).
    pub status_class: Option<u16>,
}

/// A `--status` value: `5xx`, `404` is not a class and is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status filter {0:?} is not a class; use 1xx, 2xx, 3xx, 4xx or 5xx")]
pub struct StatusClassError(pub String);

/// Parses `2xx` … `5xx`.
pub fn status_class(text: &str) -> Result<u16, StatusClassError> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_bytes() {
        [d @ b'1'..=b'5', b'x', b'x'] => Ok(u16::from(d - b'0')),
        _ => Err(StatusClassError(text.to_owned())),
    }
}

impl Filter {
    fn matches(&self, e: &Entry) -> bool {
        self.service.as_ref().is_none_or(|s| *s == e.service)
            && self.status_class.is_none_or(|c| e.status / 100 == c)
    }
}

/// The most recent entries within a count and a byte budget; the oldest
/// go first.
#[derive(Debug)]
pub struct Buffer {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    next_id: u64,
}

impl Default for Buffer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    }
}

impl Buffer {
    /// A buffer of at most `max_entries` entries and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            next_id: 1,
        }
    }

    /// Adds `entry` with the next id (returned), evicting the oldest
    /// entries until it fits. An entry larger than the whole budget is not
    /// kept.
    pub fn push(&mut self, mut entry: Entry) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        entry.id = id;
        let size = entry.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return id;
        }
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.size();
        }
        self.bytes += size;
        self.entries.push_back(entry);
        id
    }

    /// The entries `filter` selects, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<&Entry> {
        self.entries
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .collect()
    }

    /// The entry with `id`, while it is kept.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        let i = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        self.entries.get(i)
    }

    /// Entries and bytes kept now.
    pub fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests;
