//! A consistent, cheap-to-read view of the mesh, published by the node's
//! event loop after every change. The proxy reads it on every request
//! without talking to the event loop.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::{admission::PeerKind, health::HealthCheck, record::ServiceRecord};

/// A service this node provides from a local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// What is announced.
    pub record: ServiceRecord,
    /// The local port of the backend (reached on 127.0.0.1, then ::1).
    pub port: u16,
    /// How the daemon checks the backend; `None`: not checked, and the
    /// announced health stays `unknown` (still routable).
    pub health: Option<HealthCheck>,
    /// Whether the backend wants plain HTTP or TLS on that port. Only this
    /// node needs to know: it is not announced.
    pub scheme: Scheme,
}

/// How a local backend is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain TCP.
    #[default]
    Http,
    /// TLS (the backend's certificate is not verified: see docs/security.md).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend scheme other than `http` or `https`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scheme {scheme:?} is not supported; use \"http\" or \"https\"")]
pub struct SchemeError {
    /// The scheme as given.
    pub scheme: String,
}

impl std::str::FromStr for Scheme {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(SchemeError {
                scheme: other.to_owned(),
            }),
        }
    }
}

/// How a connected peer is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    /// Remote addresses of the open connections.
    pub addrs: Vec<Multiaddr>,
    /// Whether at least one connection is direct (not through a relay).
    pub direct: bool,
    /// Last measured round-trip time.
    pub rtt: Option<Duration>,
    /// The agent version the peer reported.
    pub agent: Option<String>,
    /// What the peer is to this node: member, relay, pending admission.
    pub kind: PeerKind,
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// A namespace member that provides and uses services.
    #[default]
    Member,
    /// A public bootstrap, relay and AutoNAT server for any namespace.
    Relay,
}

/// Whether other nodes can dial this one, as AutoNAT found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reachability {
    /// Not known yet.
    #[default]
    Unknown,
    /// Reachable from outside at the address in the snapshot's external addresses.
    Public,
    /// Behind a NAT or firewall: others reach it through a relay.
    Private,
}

/// The state of a relay reservation: can peers reach this node through it?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Asked for, no answer yet.
    Pending,
    /// Granted: peers can dial this node through the relay.
    Accepted,
    /// Refused or lost, with the reason.
    Failed(String),
}

/// A relay this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLink {
    /// The relay node.
    pub peer: PeerId,
    /// Address of the relay.
    pub addr: Multiaddr,
    /// This node's reservation on it.
    pub reservation: Reservation,
}

/// A peer that failed the admission handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionFailure {
    /// The peer.
    pub peer: PeerId,
    /// What a person should read.
    pub reason: String,
    /// The peer connected to this node and was refused: its problem, not
    /// this node's (shown as a past event). False when this node dialled
    /// it and was refused: this node's problem.
    pub inbound: bool,
}

/// A remote provider of a service.
#[derive(Debug, Clone)]
pub struct RemoteService {
    /// The provider node.
    pub peer: PeerId,
    /// What it announced.
    pub record: ServiceRecord,
    /// When the record expires unless refreshed.
    pub expires: Instant,
}

/// One provider of a service, local or remote.
#[derive(Debug, Clone, Copy)]
pub enum Provider<'a> {
    /// This node, from a local port.
    Local(&'a LocalService),
    /// Another node.
    Remote(&'a RemoteService),
}

impl Provider<'_> {
    /// The announced record.
    pub fn record(&self) -> &ServiceRecord {
        match self {
            Provider::Local(l) => &l.record,
            Provider::Remote(r) => &r.record,
        }
    }
}

/// The node's view of the mesh at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// This node.
    pub local_peer: PeerId,
    /// The role of this node.
    pub role: Role,
    /// The namespace this node is in (empty for a relay).
    pub namespace: String,
    /// Whether a secret guards the namespace.
    pub has_secret: bool,
    /// Addresses this node listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Addresses others can reach this node at, as confirmed.
    pub external_addrs: Vec<Multiaddr>,
    /// Addresses peers have seen this node connect from.
    pub observed_addrs: Vec<Multiaddr>,
    /// Reachability found by AutoNAT.
    pub reachability: Reachability,
    /// Relays in use and the reservation on each.
    pub relays: Vec<RelayLink>,
    /// Bootstrap addresses configured.
    pub bootstrap: Vec<Multiaddr>,
    /// Recent admission failures, newest last.
    pub admission_failures: Vec<AdmissionFailure>,
    /// Services this node provides, by name. Their records carry the live
    /// health found by their checks.
    pub local: BTreeMap<String, LocalService>,
    /// Why the last failed health check of a local service failed, by
    /// service name (cleared when the service is replaced or withdrawn).
    pub health_failures: BTreeMap<String, String>,
    /// Services other nodes provide.
    pub remote: Vec<RemoteService>,
    /// Connected peers.
    pub peers: BTreeMap<PeerId, PeerLink>,
}

impl Snapshot {
    /// The view of a node that has not started yet: no namespace, no
    /// addresses, peers or services (also what tests build theirs from).
    pub fn empty(local_peer: PeerId, role: Role) -> Self {
        Snapshot {
            local_peer,
            role,
            namespace: String::new(),
            has_secret: false,
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            observed_addrs: Vec::new(),
            reachability: Reachability::Unknown,
            relays: Vec::new(),
            bootstrap: Vec::new(),
            admission_failures: Vec::new(),
            local: BTreeMap::new(),
            health_failures: BTreeMap::new(),
            remote: Vec::new(),
            peers: BTreeMap::new(),
        }
    }

    /// Every provider of `name`: the local one first, then remote ones.
    pub fn providers(&self, name: &str) -> Vec<Provider<'_>> {
        let mut out = Vec::new();
        if let Some(l) = self.local.get(name) {
            out.push(Provider::Local(l));
        }
        out.extend(
            self.remote
                .iter()
                .filter(|r| r.record.name == name)
                .map(Provider::Remote),
        );
        out
    }

    /// Every known service name.
    pub fn service_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .local
            .keys()
            .map(String::as_str)
            .chain(self.remote.iter().map(|r| r.record.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_parse_and_others_are_named() {
        assert_eq!("http".parse::<Scheme>(), Ok(Scheme::Http));
        assert_eq!("https".parse::<Scheme>(), Ok(Scheme::Https));
        let e = "ftp".parse::<Scheme>().unwrap_err();
        assert_eq!(e.scheme, "ftp");
        assert_eq!(
            e.to_string(),
            r#"scheme "ftp" is not supported; use "http" or "https""#
        );
    }
}
