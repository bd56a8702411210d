//! Errors of the mesh-core crate.

use std::path::PathBuf;

/// Errors returned by [`crate::Node`] and its handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The identity key file could not be read or written.
    #[error("identity key {path}: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The identity key file exists but holds no valid key.
    #[error("identity key {path} is corrupt ({reason}); move it away to create a new identity")]
    CorruptIdentity { path: PathBuf, reason: String },
    /// Building the libp2p transport or behaviours failed.
    #[error("starting the libp2p node: {0}")]
    Setup(String),
    /// A listen address was rejected.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// A dial failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial { addr: String, reason: String },
    /// A service record failed validation before it was published.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    /// The node's event loop has stopped.
    #[error("the devmesh node has stopped")]
    Stopped,
}
