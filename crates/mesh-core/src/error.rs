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
    /// A listen address was rejected. (The cause is written into the
    /// message, one per line, so it is a field, not a source.)
    #[error("cannot listen on {addr}{}", lines(&transport_causes(.cause)))]
    Listen {
        addr: String,
        cause: Box<TransportError<std::io::Error>>,
    },
    /// A dial was asked for without any address.
    #[error("cannot connect: no address given")]
    NoAddress,
    /// A dial failed: `target` names the peer and the addresses tried;
    /// the message gives each cause on its own line.
    #[error("cannot connect to {target}{}", lines(&dial_causes(.cause)))]
    Dial {
        target: String,
        cause: Box<DialError>,
    },
    /// A service record failed validation before it was published.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The node's event loop has stopped.
    #[error("the devmesh node has stopped")]
    Stopped,
}

/// Who a failed dial was for: the peer (when known) and the addresses
/// tried.
pub fn dial_target(peer: Option<PeerId>, tried: &[libp2p::Multiaddr], error: &DialError) -> String {
    let mut addrs: Vec<String> = match error {
        DialError::Transport(errors) => errors.iter().map(|(a, _)| a.to_string()).collect(),
        _ => Vec::new(),
    };
    if addrs.is_empty() {
        addrs = tried.iter().map(ToString::to_string).collect();
    }
    // An address's own `/p2p/<peer>` says the peer again: name it once.
    let peer = peer.or_else(|| tried.iter().find_map(crate::peer_of));
    if let Some(p) = peer {
        let suffix = format!("/p2p/{p}");
        for a in &mut addrs {
            if let Some(bare) = a.strip_suffix(&suffix) {
                *a = bare.to_owned();
            }
        }
    }
    match (peer, addrs.is_empty()) {
        (Some(p), true) => format!("peer {p}"),
        (Some(p), false) => format!("peer {p} at {}", addrs.join(", ")),
        (None, false) => addrs.join(", "),
        (None, true) => "a peer with no address".to_owned(),
    }
}

/// The causes of a failed dial, each once: per address tried, what went
/// wrong (libp2p nests them several levels deep in one line).
pub fn dial_causes(error: &DialError) -> Vec<String> {
    let mut causes = match error {
        DialError::Transport(errors) => {
            let several = errors.len() > 1;
            errors
                .iter()
                .flat_map(|(addr, e)| {
                    transport_causes(e)
                        .into_iter()
                        .map(move |c| if several { format!("{addr}: {c}") } else { c })
                })
                .collect()
        }
        DialError::WrongPeerId { obtained, address } => vec![format!(
            "the node at {} is {obtained}, not the peer asked for",
            address
        )],
        DialError::NoAddresses => vec!["no address is known for the peer".to_owned()],
        other => vec![other.to_string()],
    };
    causes.dedup();
    causes
}

/// The causes inside a transport error: libp2p's `TransportError::Other`
/// writes nothing itself, and the DNS transport puts several dials in one.
pub fn transport_causes(error: &TransportError<std::io::Error>) -> Vec<String> {
    match error {
        TransportError::MultiaddrNotSupported(addr) => {
            vec![format!("{addr} is not an address this node can use")]
        }
        TransportError::Other(io) => split_multiple(&Chain(io).to_string()),
    }
}

/// The dials of libp2p-dns's "Multiple dial errors occurred:" text, one
/// each, or `text` as it is.
fn split_multiple(text: &str) -> Vec<String> {
    match text.split_once("Multiple dial errors occurred:") {
        Some((_, rest)) => rest
            .split("\n - ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => vec![text.trim().to_owned()],
    }
}

/// `causes` after a colon: on the same line when there is one, else one
/// indented line each.
fn lines(causes: &[String]) -> String {
    match causes {
        [] => ": no reason given".to_owned(),
        [one] => format!(": {one}"),
        many => format!(":\n  {}", many.join("\n  ")),
    }
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
    /// Valid, but the record table has no room for it.
    #[error(transparent)]
    Full(#[from] crate::registry::Full),
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
    fn dial_errors_name_the_peer_and_give_one_cause_per_line() {
        let peer = PeerId::random();
        let a: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/1"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let b: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let refused = || {
            TransportError::Other(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            ))
        };
        let error = DialError::Transport(vec![(a.clone(), refused()), (b.clone(), refused())]);
        let e = Error::Dial {
            target: dial_target(Some(peer), &[], &error),
            cause: Box::new(error),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "cannot connect to peer {peer} at {a}, {b}:\n  {a}: Connection refused (os error 111)\n  {b}: Connection refused (os error 111)"
            )
        );
        let tried = a.clone().with(libp2p::multiaddr::Protocol::P2p(peer));
        let one = DialError::Transport(vec![(tried.clone(), refused())]);
        assert_eq!(
            Error::Dial {
                target: dial_target(None, &[tried], &one),
                cause: Box::new(one),
            }
            .to_string(),
            format!("cannot connect to peer {peer} at {a}: Connection refused (os error 111)")
        );
        assert_eq!(
            split_multiple("Multiple dial errors occurred:\n - x: refused\n - y: timed out"),
            ["x: refused", "y: timed out"]
        );
        let busy = Error::Listen {
            addr: a.to_string(),
            cause: Box::new(TransportError::Other(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "Address already in use (os error 98)",
            ))),
        };
        assert_eq!(
            busy.to_string(),
            format!("cannot listen on {a}: Address already in use (os error 98)")
        );
    }

    #[test]
    fn chain_writes_each_source_once() {
        let e = Context(Repeats(std::io::Error::other("disk full")));
        assert_eq!(Chain(&e).to_string(), "context: outer: disk full");
    }
}
