//! A consistent, cheap-to-read view of the mesh, published by the node's
//! event loop after every change. The proxy reads it on every request
//! without talking to the event loop.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

use crate::record::ServiceRecord;

/// A service this node provides from a local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// What is announced.
    pub record: ServiceRecord,
    /// The local port of the backend (reached on 127.0.0.1, then ::1).
    pub port: u16,
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
    /// The namespace this node is in.
    pub namespace: String,
    /// Addresses this node listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Services this node provides, by name.
    pub local: BTreeMap<String, LocalService>,
    /// Services other nodes provide.
    pub remote: Vec<RemoteService>,
    /// Connected peers.
    pub peers: BTreeMap<PeerId, PeerLink>,
}

impl Snapshot {
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
