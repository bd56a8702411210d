//! The kept start of a body: bytes are copied only until the prefix is
//! full; the body itself streams on untouched.

use bytes::BytesMut;

use super::BodyPrefix;

/// The first `limit` bytes of a body, and whether there were more.
#[derive(Debug, Clone, Default)]
pub struct Prefix {
    kept: BytesMut,
    limit: usize,
    truncated: bool,
    total: u64,
}

impl Prefix {
    /// Keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            kept: BytesMut::new(),
            limit,
            truncated: false,
            total: 0,
        }
    }

    /// Notes a chunk of the body as it passes.
    pub fn see(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.limit - self.kept.len();
        if chunk.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Whether no more bytes are kept.
    pub fn is_full(&self) -> bool {
        self.kept.len() >= self.limit
    }

    /// The kept bytes, whether the body was longer, and its length.
    pub fn finish(self) -> BodyPrefix {
        BodyPrefix {
            bytes: self.kept.freeze(),
            truncated: self.truncated,
            total: self.total,
        }
    }
}
