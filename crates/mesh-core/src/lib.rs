//! The devmesh libp2p node.
//!
//! A [`Node`] joins a namespace, announces the services this machine provides
//! as signed [`record::Announcement`]s on a gossipsub topic, learns the
//! services of the other members (gossip, plus a full-table sync on connect),
//! and exposes everything it knows as a [`Snapshot`] that the proxy reads on
//! every request. One task owns the libp2p `Swarm`; callers hold a
//! cloneable [`NodeHandle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_core::Error> {
//! use mesh_core::{Config, LocalService, Node, record::ServiceRecord};
//! let keypair = libp2p::identity::Keypair::generate_ed25519();
//! let namespace = mesh_core::Namespace::new("team", Some(&mesh_core::Secret::generate()));
//! let (node, _task) = Node::spawn(Config::new(keypair, namespace))?;
//! node.register(LocalService {
//!     record: ServiceRecord::http("api", semver::Version::new(1, 4, 2)),
//!     port: 3000,
//!     health: None,
//!     scheme: mesh_core::Scheme::Http,
//! })
//! .await?;
//! # Ok(()) }
//! ```

pub mod addr;
pub mod admission;
mod behaviour;
mod config;
pub mod counters;
pub mod error;
pub mod health;
pub mod holds;
pub mod identity;
pub mod namespace;
mod node;
mod peers;
pub mod record;
pub mod registry;
mod snapshot;
pub mod sync;
mod verified;
mod wire;

pub use addr::{group_by_peer, is_relayed, peer_of};
pub use behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, RELAY_HOP_PROTOCOL, SYNC_PROTOCOL};
pub use config::Config;
pub use error::Error;
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use namespace::{Invite, Namespace, Secret};
pub use node::{Event, Node, NodeHandle};
pub use peers::links::Links;
pub use snapshot::{
    AdmissionFailure, LocalService, PeerLink, Provider, Reachability, RelayLink, RemoteService,
    Reservation, Role, Scheme, SchemeError, Snapshot,
};
pub use sync::{SyncEntry, SyncRequest, SyncResponse};
