//! The admission handshake: proof of namespace membership on every new
//! connection.
//!
//! When a connection to a new peer opens, each namespace member sends the
//! peer an [`AuthRequest`] holding its namespace id and a fresh random
//! nonce. The peer answers with an [`AuthResponse`]: a proof over that nonce
//! and both peer ids keyed by the namespace secret when it is a member of
//! the same namespace, or what it is instead (a relay, or a member of
//! another namespace). Each side admits the other only on a valid proof for
//! its own nonce, so admission is mutual and a captured proof is useless for
//! another nonce, another peer or in the reverse direction. Noise has
//! already authenticated both peer ids.
//!
//! This module holds the wire messages, `respond` (the answering side)
//! and the challenging side's state machine (`handshake`); both are pure,
//! the node's event loop carries out what they decide. The proofs
//! themselves are [`Namespace::proof`] and [`Namespace::verify_proof`],
//! beside the keys they use.

pub(crate) mod budget;
pub(crate) mod handshake;

use std::io;

use libp2p::{PeerId, StreamProtocol, request_response::cbor};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::namespace::Namespace;

/// Stream protocol of the handshake.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/auth/1");
/// Length of a challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Largest encoded handshake message read (they are under 200 bytes).
pub(crate) const MAX_MESSAGE: u64 = 1024;

/// Handshake format version.
pub(crate) const VERSION: u32 = 1;
/// Length of a [`Namespace::id`].
const NAMESPACE_ID_LEN: usize = 16;

/// A challenge: "prove you are in namespace `namespace_id`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// Handshake format version.
    pub v: u32,
    /// [`crate::namespace::Namespace::id`] of the requester's namespace.
    pub namespace_id: Vec<u8>,
    /// Random challenge the responder must sign.
    pub nonce: Vec<u8>,
}

/// The answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthResponse {
    /// Same namespace; the proof of knowing its secret.
    Member { proof: Vec<u8> },
    /// A relay / bootstrap node, member of no namespace.
    Relay,
    /// A member of another namespace.
    OtherNamespace,
    /// The request was malformed.
    Malformed,
}

/// The codec the node reads and writes handshake messages with: CBOR,
/// each message cut off at [`MAX_MESSAGE`] bytes.
pub(crate) fn codec() -> cbor::codec::Codec<AuthRequest, AuthResponse> {
    cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_MESSAGE)
        .set_response_size_maximum(MAX_MESSAGE)
}

/// Decodes a challenge as the node's codec reads one from a stream
/// holding `bytes` (what the fuzz target calls).
pub fn decode_request(bytes: &[u8]) -> io::Result<AuthRequest> {
    crate::wire::request(codec(), &PROTOCOL, bytes)
}

/// Decodes an answer as the node's codec reads one from a stream holding
/// `bytes` (what the fuzz target calls).
pub fn decode_response(bytes: &[u8]) -> io::Result<AuthResponse> {
    crate::wire::response(codec(), &PROTOCOL, bytes)
}

/// The answer to `peer`'s challenge `request`: a proof when both are in
/// `namespace`; `None` as the namespace makes this node answer as a relay.
pub(crate) fn respond(
    namespace: Option<&Namespace>,
    local: &PeerId,
    peer: &PeerId,
    request: &AuthRequest,
) -> AuthResponse {
    let Some(namespace) = namespace else {
        return AuthResponse::Relay;
    };
    if request.v != VERSION
        || request.nonce.len() != NONCE_LEN
        || request.namespace_id.len() != NAMESPACE_ID_LEN
    {
        warn!(%peer, "dropped a malformed admission request");
        return AuthResponse::Malformed;
    }
    if request.namespace_id != namespace.id() {
        debug!(%peer, "admission request for another namespace");
        return AuthResponse::OtherNamespace;
    }
    AuthResponse::Member {
        proof: namespace.proof(&request.nonce, local, peer).to_vec(),
    }
}

/// Why a peer failed the admission handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// It proved a secret of this namespace, not ours.
    #[error(
        "secret does not match namespace {namespace}: peer {peer} is a member with a different secret. Ask a member for a fresh invite (`devmesh invite`) and run `devmesh join <token>`"
    )]
    WrongSecret { namespace: String, peer: PeerId },
    /// It proved a secret and this node has none.
    #[error(
        "namespace {namespace} has a secret and this node has none: peer {peer} proved a secret. Ask a member for an invite (`devmesh invite`) and run `devmesh join <token>`"
    )]
    MissingSecret { namespace: String, peer: PeerId },
    /// It could not read the challenge.
    #[error("peer {peer} could not read our admission request (another devmesh version?)")]
    Unreadable { peer: PeerId },
}

impl Rejection {
    /// The peer that was rejected.
    pub fn peer(&self) -> PeerId {
        match self {
            Rejection::WrongSecret { peer, .. }
            | Rejection::MissingSecret { peer, .. }
            | Rejection::Unreadable { peer } => *peer,
        }
    }
}

/// What a peer is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerKind {
    /// Handshake not finished yet.
    Pending,
    /// Proved membership of this node's namespace.
    Member,
    /// A relay / bootstrap node.
    Relay,
    /// A member of another namespace; disconnected.
    Foreign,
    /// Claimed this namespace but failed the proof; disconnected.
    Rejected,
    /// A node using this relay (seen only on relays).
    Client,
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerKind::Pending => "pending",
            PeerKind::Member => "member",
            PeerKind::Relay => "relay",
            PeerKind::Foreign => "foreign",
            PeerKind::Rejected => "rejected",
            PeerKind::Client => "client",
        })
    }
}
