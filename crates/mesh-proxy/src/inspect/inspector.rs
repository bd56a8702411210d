//! [`Inspector`]: a node's [`Buffer`] shared by the front door, the
//! provider side and the API, with a feed of new entries.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use tokio::sync::broadcast;

use super::{
    Buffer, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Entry, Filter, Side,
    sniff::{Capture, Ends},
};

/// New entries a slow subscriber may fall behind by before it misses some
/// (also what the feed may hold beyond the buffer's budget: at most 128
/// entries of two 64 KiB prefixes each).
const FEED: usize = 128;

/// How a node inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most requests kept.
    pub max_entries: usize,
    /// Most bytes kept (headers and body prefixes).
    pub max_bytes: usize,
    /// Keep `Authorization`, `Cookie` and `Set-Cookie` values.
    pub secrets: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            secrets: false,
        }
    }
}

/// The recent requests of a node, and a broadcast of each new one.
#[derive(Debug)]
pub struct Inspector {
    buffer: Mutex<Buffer>,
    feed: broadcast::Sender<Arc<Entry>>,
    secrets: bool,
}

impl Inspector {
    /// An empty inspector.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            buffer: Mutex::new(Buffer::new(settings.max_entries, settings.max_bytes)),
            feed: broadcast::channel(FEED).0,
            secrets: settings.secrets,
        })
    }

    /// Whether secret header values are kept.
    pub fn secrets(&self) -> bool {
        self.secrets
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        // A push or a read cannot leave the buffer half-changed.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry` (with the next id) and tells the subscribers.
    pub fn record(&self, entry: Entry) -> Arc<Entry> {
        let entry = self.buffer().push(entry);
        // No subscriber is not an error.
        let _ = self.feed.send(entry.clone());
        entry
    }

    /// Each new entry, as it is recorded (a lagging receiver misses some
    /// and is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.feed.subscribe()
    }

    /// At most `limit` of the entries `filter` selects, newest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<Arc<Entry>> {
        self.buffer().list(filter, limit)
    }

    /// The entry with `id`, while it is kept.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        self.buffer().get(id)
    }

    /// The newest entry of `side` with `trace_id`.
    pub fn by_trace(&self, trace_id: &str, side: Side) -> Option<Arc<Entry>> {
        self.buffer().by_trace(trace_id, side)
    }

    /// Entries and bytes kept now.
    pub fn usage(&self) -> (usize, usize) {
        self.buffer().usage()
    }
}

/// The captures of one provider tunnel: its sniffer, fed by the splice,
/// and the inspector the entries go to.
#[derive(Debug)]
pub(crate) struct TunnelCapture {
    capture: Mutex<Capture>,
    inspector: Arc<Inspector>,
}

impl TunnelCapture {
    /// Captures a tunnel between `ends` into `inspector`.
    pub(crate) fn new(ends: Ends, inspector: Arc<Inspector>) -> Self {
        Self {
            capture: Mutex::new(Capture::new(ends)),
            inspector,
        }
    }

    fn capture(&self) -> MutexGuard<'_, Capture> {
        // A panic while sniffing leaves nothing half-written that matters.
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes read from the consumer, as they go to the backend.
    pub(crate) fn consumer(&self, bytes: &[u8]) {
        self.capture().on_consumer(bytes, SystemTime::now());
    }

    /// Bytes read from the backend, as they go to the consumer.
    pub(crate) fn backend(&self, bytes: &[u8]) {
        let entry = self.capture().on_backend(bytes, SystemTime::now());
        if let Some(entry) = entry {
            self.inspector.record(entry);
        }
    }

    /// The tunnel ended.
    pub(crate) fn close(&self) {
        let entry = self.capture().on_close(SystemTime::now());
        if let Some(entry) = entry {
            self.inspector.record(entry);
        }
    }
}
