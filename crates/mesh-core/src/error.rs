//! Errors of the mesh-core crate.
//!
//! [`Error`] is what [`crate::Node`] and [`crate::NodeHandle`] return;
//! [`RecordRejection`] says why a record from the network was dropped.
//! Errors of one piece of input live beside the code that reads it (and
//! are re-exported here): a namespace name ([`NameError`]), a secret or an
//! invite ([`SecretError`], [`InviteError`]), a sealed record
//! ([`OpenError`]), a record's content ([`RecordError`]), a peer in the
//! admission handshake ([`Rejection`]). Their messages are the text users
//! and logs read.

use std::{fmt, path::PathBuf};

use libp2p::{PeerId, TransportError, gossipsub, identity::DecodingError, swarm::DialError};

use crate::admission::PeerKind;
pub use crate::{
    admission::Rejection,
    namespace::{InviteError, InviteProblem, NameError, OpenError, SecretError, SecretFormat},
    record::{Malformed, RecordError},
};

/// Writes an error with each of its sources, `error: source: source`: the
/// whole text a person reads. A source whose text already ends what was
/// written (an error that repeats its source in its own message, as some
/// of this crate's and other crates' errors do) is not written again.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        for source in std::iter::successors(self.0.source(), |&e| e.source()) {
            let text = source.to_string();
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
        }
        Ok(())
    }
}

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
    #[error("identity key {path} is corrupt ({source}); move it away to create a new identity")]
    CorruptIdentity {
        path: PathBuf,
        #[source]
        source: DecodingError,
    },
    /// A new identity key could not be encoded for its file.
    #[error("starting the libp2p node: encoding identity: {0}")]
    EncodeIdentity(#[source] DecodingError),
    /// Building the libp2p transport or behaviours failed.
    #[error("starting the libp2p node: {0}")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The node could not subscribe to its namespace's records topic.
    #[error("starting the libp2p node: subscribing to records topic: {0}")]
    Subscribe(#[source] gossipsub::SubscriptionError),
    /// A listen address was rejected.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: Box<TransportError<std::io::Error>>,
    },
    /// A dial was asked for without any address.
    #[error("cannot connect: no address given")]
    NoAddress,
    /// A dial failed.
    #[error("cannot connect to {addr}: {source}")]
    Dial {
        addr: String,
        #[source]
        source: Box<DialError>,
    },
    /// A service record failed validation before it was published.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The node's event loop has stopped.
    #[error("the devmesh node has stopped")]
    Stopped,
}

/// Why a record from the network was dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordRejection {
    /// It came from a peer that has not been admitted.
    #[error("record from a peer that is not an admitted member ({kind})")]
    NotMember { kind: PeerKind },
    /// A gossip message without an author.
    #[error("unsigned gossip message")]
    Unsigned,
    /// It does not open with the namespace's record key.
    #[error(transparent)]
    Sealed(#[from] OpenError),
    /// It opened but is not a valid announcement for the namespace.
    #[error(transparent)]
    Invalid(#[from] RecordError),
    /// Gossip of one provider's record published by another peer.
    #[error("record of {provider} published by {author}")]
    WrongAuthor {
        provider: Box<PeerId>,
        author: Box<PeerId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("context")]
    struct Context(#[source] Repeats);

    #[test]
    fn chain_writes_each_source_once() {
        let e = Context(Repeats(std::io::Error::other("disk full")));
        assert_eq!(Chain(&e).to_string(), "context: outer: disk full");
    }
}
