//! Wire types of the record-table sync (`/devmesh/sync/2`): a member asks a
//! newly admitted member for every live announcement it knows.

use serde::{Deserialize, Serialize};

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
