//! Errors of the mesh-proxy crate.

/// Errors of the proxy's servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tunnel protocol is already being served.
    #[error("the tunnel protocol is already registered on this node")]
    AlreadyServing,
    /// Binding or accepting on the front door failed.
    #[error("front door: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a tunnel to a provider could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    #[error("opening a stream to {peer}: {reason}")]
    Open { peer: String, reason: String },
    #[error("tunnel handshake with {peer}: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("peer {peer} refused the tunnel: {reason}")]
    Refused { peer: String, reason: String },
}
