//! The service graph as one node sees it (pure): the nodes (this one and
//! its peers), the path to each peer (direct or relayed, RTT), the
//! services with their providers, versions and health, and the request
//! edges this node's front door observed (rate, 5xx rate, p50/p95 over the
//! last [`super::rates::WINDOW`]). [`Graph::to_dot`] writes it as Graphviz,
//! [`Graph::to_text`] for a terminal.
//!
//! A node observes only the requests that passed through its own front
//! door: its edges all start at itself. Requests teammates send to its
//! services are seen on their nodes.

use std::{collections::BTreeMap, fmt::Write as _};

use mesh_core::{PeerId, Snapshot, admission::PeerKind};
use serde::{Deserialize, Serialize};

use super::rates::{EdgeKey, Stats};

/// What `devmesh graph` and `/api/graph` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// This node's peer id.
    pub node: String,
    /// The namespace this node is in.
    pub namespace: String,
    /// Seconds of requests the rates and quantiles cover.
    pub window_seconds: f64,
    /// This node first, then its peers and the providers it knows of.
    pub nodes: Vec<GraphNode>,
    /// The path from this node to each connected peer.
    pub paths: Vec<PathEdge>,
    /// Every service known, by name.
    pub services: Vec<GraphService>,
    /// Requests this node's front door sent, by service, provider and route.
    pub requests: Vec<RequestEdge>,
}

/// A node of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Peer id.
    pub peer: String,
    /// `self`, or what the peer is to this node (`member`, `relay`,
    /// `pending` …); `unconnected` for a provider with no connection now.
    pub kind: String,
}

/// The connection from this node to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathEdge {
    /// The peer.
    pub peer: String,
    /// `direct` when a connection is direct, else `relayed`.
    pub path: String,
    /// Last measured round trip, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// A service and its providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphService {
    /// Name.
    pub name: String,
    /// `http` or `tcp`.
    pub protocol: String,
    /// Providers, this node first.
    pub providers: Vec<GraphProvider>,
}

/// One provider of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphProvider {
    /// The provider's peer id.
    pub peer: String,
    /// Whether it is this node.
    pub local: bool,
    /// Announced version.
    pub version: String,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health: String,
}

/// Requests from this node to one provider of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEdge {
    /// The service (`unknown` for requests that named none known).
    pub service: String,
    /// The provider's peer id; empty when the front door answered itself
    /// (no provider, refused).
    pub provider: String,
    /// `local`, `direct`, `relayed` or `none`.
    pub route: String,
    /// Rates and quantiles over the window.
    #[serde(flatten)]
    pub stats: Stats,
}

/// The path to a peer as shown: `direct` or `relayed`.
fn path_of(direct: bool) -> &'static str {
    if direct { "direct" } else { "relayed" }
}

impl Graph {
    /// The graph of `snapshot` with the request `edges` of the last
    /// `window_seconds`.
    pub fn build(snapshot: &Snapshot, edges: &[(EdgeKey, Stats)], window_seconds: f64) -> Graph {
        let me = snapshot.local_peer.to_string();
        let mut nodes = vec![GraphNode {
            peer: me.clone(),
            kind: "self".into(),
        }];
        let mut paths = Vec::new();
        for (peer, link) in &snapshot.peers {
            if matches!(link.kind, PeerKind::Foreign | PeerKind::Rejected) {
                continue;
            }
            nodes.push(GraphNode {
                peer: peer.to_string(),
                kind: link.kind.to_string(),
            });
            paths.push(PathEdge {
                peer: peer.to_string(),
                path: path_of(link.direct).into(),
                rtt_ms: link.rtt.map(|d| d.as_secs_f64() * 1000.0),
            });
        }
        let mut services = BTreeMap::<&str, GraphService>::new();
        let local = snapshot
            .local
            .values()
            .map(|l| (&snapshot.local_peer, &l.record));
        let remote = snapshot.remote.iter().map(|r| (&r.peer, &r.record));
        for (peer, record) in local.chain(remote) {
            let service = services
                .entry(record.name.as_str())
                .or_insert_with(|| GraphService {
                    name: record.name.clone(),
                    protocol: record.protocol.to_string(),
                    providers: Vec::new(),
                });
            service.providers.push(GraphProvider {
                peer: peer.to_string(),
                local: *peer == snapshot.local_peer,
                version: record.version.to_string(),
                health: record.health.to_string(),
            });
            add_unconnected(&mut nodes, peer);
        }
        let requests = edges
            .iter()
            .map(|(k, stats)| RequestEdge {
                service: k.service.clone(),
                provider: k.provider.clone(),
                route: k.route.clone(),
                stats: stats.clone(),
            })
            .collect();
        Graph {
            node: me,
            namespace: snapshot.namespace.clone(),
            window_seconds,
            nodes,
            paths,
            services: services.into_values().collect(),
            requests,
        }
    }

    /// The graph in Graphviz's DOT language: one ellipse per node, one box
    /// per service; a provider edge from each service to each of its
    /// providers (version and health), an undirected path edge from this
    /// node to each peer (direct solid, relayed dashed, RTT), and a bold
    /// request edge from this node to each service it sent requests to.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph devmesh {\n  rankdir=LR;\n");
        let _ = writeln!(
            out,
            "  label={};",
            quote(&format!("devmesh namespace {}", self.namespace))
        );
        for n in &self.nodes {
            let label = format!("{}\n{}", short(&n.peer), n.kind);
            let _ = writeln!(
                out,
                "  {} [shape=ellipse, label={}];",
                quote(&node_id(&n.peer)),
                quote(&label)
            );
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "  {} [shape=box, label={}];",
                quote(&service_id(&s.name)),
                quote(&format!("{} ({})", s.name, s.protocol))
            );
            for p in &s.providers {
                let label = format!("{} {}", p.version, p.health);
                let style = if p.health == "unhealthy" {
                    "dotted"
                } else {
                    "solid"
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={}, style={style}];",
                    quote(&service_id(&s.name)),
                    quote(&node_id(&p.peer)),
                    quote(&label)
                );
            }
        }
        for p in &self.paths {
            let rtt = p
                .rtt_ms
                .map_or_else(String::new, |ms| format!(" {ms:.1} ms"));
            let style = if p.path == "direct" {
                "solid"
            } else {
                "dashed"
            };
            let _ = writeln!(
                out,
                "  {} -> {} [dir=none, style={style}, label={}];",
                quote(&node_id(&self.node)),
                quote(&node_id(&p.peer)),
                quote(&format!("{}{rtt}", p.path))
            );
        }
        for e in &self.requests {
            if !self.services.iter().any(|s| s.name == e.service) {
                // A request for a name nobody provides: no box to point at.
                let _ = writeln!(
                    out,
                    "  {} [shape=box, style=dashed, label={}];",
                    quote(&service_id(&e.service)),
                    quote(&e.service)
                );
            }
            let label = format!(
                "{} {}: {}",
                e.route,
                short(&e.provider),
                stats_text(&e.stats)
            );
            let _ = writeln!(
                out,
                "  {} -> {} [style=bold, color=blue, label={}];",
                quote(&node_id(&self.node)),
                quote(&service_id(&e.service)),
                quote(&label)
            );
        }
        out.push_str("}\n");
        out
    }

    /// The graph for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!("node {} (namespace {})\n", self.node, self.namespace);
        out.push_str("paths:\n");
        if self.paths.is_empty() {
            out.push_str("  (no peers connected)\n");
        }
        for p in &self.paths {
            let rtt = p
                .rtt_ms
                .map_or_else(|| "rtt ?".into(), |ms| format!("rtt {ms:.1} ms"));
            let kind = self
                .nodes
                .iter()
                .find(|n| n.peer == p.peer)
                .map_or("", |n| n.kind.as_str());
            let _ = writeln!(out, "  -> {} {kind} {} {rtt}", p.peer, p.path);
        }
        out.push_str("services:\n");
        if self.services.is_empty() {
            out.push_str("  (none)\n");
        }
        for s in &self.services {
            let _ = writeln!(out, "  {} ({})", s.name, s.protocol);
            for p in &s.providers {
                let here = if p.local { " (this node)" } else { "" };
                let _ = writeln!(out, "    {} {} {}{here}", p.version, p.health, p.peer);
            }
        }
        let _ = writeln!(
            out,
            "requests from this node (last {:.0} s):",
            self.window_seconds
        );
        if self.requests.is_empty() {
            out.push_str("  (none)\n");
        }
        for e in &self.requests {
            let to = if e.provider.is_empty() {
                "-"
            } else {
                e.provider.as_str()
            };
            let _ = writeln!(
                out,
                "  {} -> {to} {}: {}",
                e.service,
                e.route,
                stats_text(&e.stats)
            );
        }
        out
    }
}

/// Adds `peer` as `unconnected` unless it is a node already.
fn add_unconnected(nodes: &mut Vec<GraphNode>, peer: &PeerId) {
    let peer = peer.to_string();
    if !nodes.iter().any(|n| n.peer == peer) {
        nodes.push(GraphNode {
            peer,
            kind: "unconnected".into(),
        });
    }
}

/// `2.0 req/s, p50 1.2 ms, p95 3.4 ms` (and the 5xx rate when there are any).
pub fn stats_text(s: &Stats) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"));
    let mut text = format!(
        "{:.1} req/s, p50 {}, p95 {}",
        s.rate,
        ms(s.p50_ms),
        ms(s.p95_ms)
    );
    if s.errors > 0.0 {
        let _ = write!(text, ", 5xx {:.1}/s", s.errors);
    }
    text
}

/// The last 8 characters of a peer id, as people tell peers apart.
fn short(peer: &str) -> &str {
    if peer.is_empty() {
        return "-";
    }
    let start = peer.char_indices().rev().nth(7).map_or(0, |(i, _)| i);
    &peer[start..]
}

fn node_id(peer: &str) -> String {
    format!("peer:{peer}")
}

fn service_id(name: &str) -> String {
    format!("service:{name}")
}

/// A DOT quoted string: `"` and `\` escaped, newlines as `\n`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests;
