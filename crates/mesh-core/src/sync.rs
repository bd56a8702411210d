//! Wire types of the record-table sync (`/devmesh/sync/2`): a member asks a
//! newly admitted member for every live announcement it knows.

use std::io;

use libp2p::request_response::cbor;
use serde::{Deserialize, Serialize};

use crate::registry::MAX_PROVIDERS;

/// Bytes of sealed records a sync answer carries at most; what does not fit
/// reaches the new member by gossip within a record's lifetime.
pub const MAX_SYNC_BYTES: usize = 8 << 20;

/// Entries a sync answer carries at most: every provider a record table
/// holds, and the answering node.
pub const MAX_SYNC_ENTRIES: usize = MAX_PROVIDERS + 1;

/// Largest encoded sync answer read: [`MAX_SYNC_BYTES`] as CBOR writes
/// them (each byte of a record as an integer, of up to two bytes) and the
/// encoding of [`MAX_SYNC_ENTRIES`] entries around them. A longer one is
/// cut off and dropped by the codec before it is decoded.
pub(crate) const MAX_SYNC_RESPONSE: u64 = (2 * MAX_SYNC_BYTES + MAX_SYNC_ENTRIES * 128) as u64;

/// Largest encoded sync request read.
pub(crate) const MAX_SYNC_REQUEST: u64 = 1024;

/// Request of the record-table sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Format version.
    pub v: u32,
}

impl SyncRequest {
    /// The request this version of devmesh sends.
    pub(crate) const CURRENT: SyncRequest = SyncRequest { v: 1 };
}

/// Response of the record-table sync: every live announcement known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Sealed, signed announcements with their remaining lifetime.
    pub entries: Vec<SyncEntry>,
}

/// One announcement in a [`SyncResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncEntry {
    /// Signed envelope sealed with the namespace's record key.
    pub sealed: Vec<u8>,
    /// Milliseconds the sender still considers it valid.
    pub remaining_ms: u64,
}

/// The codec the node reads and writes sync messages with: CBOR, each
/// message cut off at [`MAX_SYNC_REQUEST`] or [`MAX_SYNC_RESPONSE`] bytes.
pub(crate) fn codec() -> cbor::codec::Codec<SyncRequest, SyncResponse> {
    cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_SYNC_REQUEST)
        .set_response_size_maximum(MAX_SYNC_RESPONSE)
}

/// Decodes a sync request as the node's codec reads one from a stream
/// holding `bytes` (what the fuzz target calls).
pub fn decode_request(bytes: &[u8]) -> io::Result<SyncRequest> {
    crate::wire::request(codec(), &crate::SYNC_PROTOCOL, bytes)
}

/// Decodes a sync response as the node's codec reads one from a stream
/// holding `bytes` (what the fuzz target calls).
pub fn decode_response(bytes: &[u8]) -> io::Result<SyncResponse> {
    crate::wire::response(codec(), &crate::SYNC_PROTOCOL, bytes)
}
