//! What a [`crate::Node`] is started with.
//!
//! `Config` is read once by [`crate::Node::spawn`]. Settings that change
//! while the node runs (the namespace, the bootstrap list) are copied into
//! the state that owns them then; after [`crate::NodeHandle::join`] or
//! [`crate::NodeHandle::add_bootstrap`] the node's own state is the truth
//! (and the [`crate::Snapshot`] shows it).

use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair};

use crate::{namespace::Namespace, peers::links::Links, snapshot::Role};

/// Settings of a [`crate::Node`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The node identity.
    pub keypair: Keypair,
    /// Member of a namespace, or relay for all.
    pub role: Role,
    /// Namespace to join first (ignored by a relay).
    pub namespace: Namespace,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever the connection is lost.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses others reach this node at, known in advance (a relay's
    /// public address behind a cloud NAT, for example).
    pub external: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// How often the node re-announces its services.
    pub heartbeat: Duration,
    /// TTL put in the node's announcements.
    pub record_ttl: Duration,
    /// How long an unused connection stays open.
    pub idle_timeout: Duration,
    /// Agent string reported through identify.
    pub agent: String,
    /// Up to how many other members every member connects to every other,
    /// and how many links a larger team keeps (see [`Links`]).
    pub links: Links,
}

/// How often a node re-announces its services when nothing changed.
///
/// A change (a service shared, stopped, or its health) is announced at
/// once, and a provider whose connection closes, or answers no ping for
/// 25 s, has its services withdrawn then; the re-announcement only keeps
/// the records of members that stay connected alive. Each member receives every other member's re-announcements, so
/// in a team of N one node handles N/20 of them a second: at 3 s, a team of
/// 100 kept every node busy with records that said nothing new.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// The TTL a node puts in its announcements: three re-announcements, so
/// that one or two lost on the way do not drop the records. It is also the
/// longest a receiver keeps them ([`crate::record::MAX_TTL`]).
pub const RECORD_TTL: Duration = Duration::from_secs(60);

impl Config {
    /// Defaults for everything but identity and namespace.
    pub fn new(keypair: Keypair, namespace: Namespace) -> Self {
        Self {
            keypair,
            role: Role::Member,
            namespace,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: true,
            heartbeat: HEARTBEAT,
            record_ttl: RECORD_TTL,
            idle_timeout: Duration::from_secs(300),
            agent: format!("devmesh/{}", env!("CARGO_PKG_VERSION")),
            links: Links::default(),
        }
    }
}
