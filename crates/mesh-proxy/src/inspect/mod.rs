//! The inspector: the most recent requests a node handled, on both ends,
//! bounded by count and by bytes (10,000 requests and 64 MiB by default),
//! each with its method, URL, headers, the first 64 KiB of each body,
//! status, timings, provider and trace id. Secrets in `Authorization`,
//! `Cookie` and `Set-Cookie` are masked unless the node is told to keep
//! them.
//!
//! The pure parts: [`Buffer`] and [`Entry`] (here), [`Prefix`] (the kept
//! start of a body), `sniff` (a provider's requests found in the bytes of
//! its splice), `wire` (the `/devmesh/inspect/1` messages) and [`diff`] (a
//! replay's diff). [`Inspector`] is the shared buffer with its feed of new
//! entries; `peer` serves and asks the provider side over libp2p.

mod capture;
mod chunked;
pub mod diff;
mod entry;
mod inspector;
pub(crate) mod peer;
pub mod sniff;
pub mod wire;

use std::{collections::VecDeque, sync::Arc};

pub use capture::Prefix;
pub use entry::{BodyPrefix, Entry, Side, Summary, Timings, headers};
pub(crate) use inspector::TunnelCapture;
pub use inspector::{Inspector, Settings};

/// Requests kept by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Bytes kept by default (headers and body prefixes of every entry).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// The part of each body an entry keeps.
pub const BODY_PREFIX: usize = 64 << 10;
/// What a masked header value shows.
pub const MASKED: &str = "<masked>";

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
    /// Whether `e` is selected.
    pub fn matches(&self, e: &Entry) -> bool {
        self.service.as_ref().is_none_or(|s| *s == e.service)
            && self.status_class.is_none_or(|c| e.status / 100 == c)
    }
}

/// The most recent entries within a count and a byte budget; the oldest
/// go first.
#[derive(Debug)]
pub struct Buffer {
    entries: VecDeque<Arc<Entry>>,
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

    /// Adds `entry` with the next id, evicting the oldest entries until it
    /// fits; returns it as kept. An entry larger than the whole budget is
    /// not kept (its id is still used).
    pub fn push(&mut self, mut entry: Entry) -> Arc<Entry> {
        entry.id = self.next_id;
        self.next_id += 1;
        let size = entry.size();
        let entry = Arc::new(entry);
        if size > self.max_bytes || self.max_entries == 0 {
            return entry;
        }
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.size();
        }
        self.bytes += size;
        self.entries.push_back(entry.clone());
        entry
    }

    /// At most `limit` of the entries `filter` selects, newest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<Arc<Entry>> {
        self.entries
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The entry with `id`, while it is kept.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        let i = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        self.entries.get(i).cloned()
    }

    /// The newest entry of `side` with `trace_id`.
    pub fn by_trace(&self, trace_id: &str, side: Side) -> Option<Arc<Entry>> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.side == side && e.trace_id == trace_id)
            .cloned()
    }

    /// Entries and bytes kept now.
    pub fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests;
