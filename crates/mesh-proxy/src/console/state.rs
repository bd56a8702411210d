//! What the dashboard shows, as one JSON document (pure): this node, its
//! peers (path, RTT, agent, addresses), the rates and latency of each
//! service, and the [`Graph`]. `/api/state` answers it; `/api/events`
//! pushes it again each time it changes.

use std::collections::BTreeMap;

use mesh_core::{Reachability, Role, Snapshot, admission::PeerKind};
use serde::Serialize;

use super::{
    graph::Graph,
    rates::{EdgeKey, Stats},
};

/// The dashboard's document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    /// This node.
    pub node: NodeInfo,
    /// Connected peers (members, relays, pending ones), by peer id.
    pub peers: Vec<PeerRow>,
    /// Requests per second and latency of each service this node's front
    /// door sent requests to within the window.
    pub rates: BTreeMap<String, Stats>,
    /// Whether the node counts requests (`devmeshd --metrics off` does not:
    /// then there are no rates).
    pub metrics: bool,
    /// The service graph.
    pub graph: Graph,
}

/// This node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInfo {
    /// Peer id.
    pub peer: String,
    /// Namespace.
    pub namespace: String,
    /// `member` or `relay`.
    pub role: &'static str,
    /// `public`, `private` or `unknown`, as AutoNAT found.
    pub reachability: &'static str,
    /// The daemon's version.
    pub version: &'static str,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRow {
    /// Peer id.
    pub peer: String,
    /// `member`, `relay`, `pending` …
    pub kind: String,
    /// `direct` or `relayed`.
    pub path: &'static str,
    /// Last round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// The agent it reported (`devmeshd/0.1.0`).
    pub agent: Option<String>,
    /// Remote addresses of its connections.
    pub addrs: Vec<String>,
}

impl State {
    /// The document for `snapshot` with the request `edges` and per-service
    /// `rates` of the last `window_seconds`.
    pub fn build(
        snapshot: &Snapshot,
        edges: &[(EdgeKey, Stats)],
        rates: BTreeMap<String, Stats>,
        window_seconds: f64,
        metrics: bool,
    ) -> State {
        let peers = snapshot
            .peers
            .iter()
            .filter(|(_, l)| !matches!(l.kind, PeerKind::Foreign | PeerKind::Rejected))
            .map(|(peer, l)| PeerRow {
                peer: peer.to_string(),
                kind: l.kind.to_string(),
                path: if l.direct { "direct" } else { "relayed" },
                rtt_ms: l.rtt.map(|d| d.as_secs_f64() * 1000.0),
                agent: l.agent.clone(),
                addrs: l.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect();
        State {
            node: NodeInfo {
                peer: snapshot.local_peer.to_string(),
                namespace: snapshot.namespace.clone(),
                role: match snapshot.role {
                    Role::Member => "member",
                    Role::Relay => "relay",
                },
                reachability: match snapshot.reachability {
                    Reachability::Unknown => "unknown",
                    Reachability::Public => "public",
                    Reachability::Private => "private",
                },
                version: env!("CARGO_PKG_VERSION"),
            },
            peers,
            rates,
            metrics,
            graph: Graph::build(snapshot, edges, window_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::graph::tests::snapshot;

    #[test]
    fn the_state_lists_peers_rates_and_the_graph() {
        let (s, a, c, _) = snapshot();
        let stats = Stats {
            rate: 1.0,
            errors: 0.0,
            p50_ms: Some(2.0),
            p95_ms: Some(3.0),
            requests: 10,
        };
        let rates = BTreeMap::from([("api".to_owned(), stats)]);
        let state = State::build(&s, &[], rates, 10.0, true);
        assert_eq!(state.node.namespace, "team");
        assert_eq!(state.node.role, "member");
        assert_eq!(state.peers.len(), 3, "the foreign peer is left out");
        let row = |p: &mesh_core::PeerId| state.peers.iter().find(|r| r.peer == p.to_string());
        assert_eq!(row(&a).unwrap().path, "direct");
        assert_eq!(row(&c).unwrap().path, "relayed");
        assert_eq!(state.graph.services.len(), 2);
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["rates"]["api"]["p95_ms"], 3.0);
        assert_eq!(json["metrics"], true);
        assert_eq!(json["graph"]["services"][0]["name"], "api");
    }
}
