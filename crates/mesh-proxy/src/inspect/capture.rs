//! The kept start of a body: bytes are copied only until the prefix is
//! full; the body itself streams on untouched.

use bytes::{Bytes, BytesMut};

/// The first `limit` bytes of a body, and whether there were more.
#[derive(Debug, Clone, Default)]
pub struct Prefix {
    kept: BytesMut,
    limit: usize,
    truncated: bool,
}

impl Prefix {
    /// Keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            kept: BytesMut::new(),
            limit,
            truncated: false,
        }
    }

    /// Notes a chunk of the body as it passes.
    pub fn see(&mut self, chunk: &[u8]) {
        let room = self.limit - self.kept.len();
        if chunk.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The kept bytes and whether the body was longer.
    pub fn finish(self) -> (Bytes, bool) {
        (self.kept.freeze(), self.truncated)
    }
}
