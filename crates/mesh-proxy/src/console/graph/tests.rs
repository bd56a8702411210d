use std::time::{Duration, Instant};

use mesh_core::{
    LocalService, PeerLink, RemoteService, Role, Scheme, record::Health, record::ServiceRecord,
};

use super::*;

fn link(kind: PeerKind, direct: bool, rtt_ms: Option<u64>) -> PeerLink {
    PeerLink {
        addrs: vec![],
        direct,
        rtt: rtt_ms.map(Duration::from_millis),
        agent: None,
        kind,
    }
}

fn record(name: &str, version: &str, health: Health) -> ServiceRecord {
    let mut r = ServiceRecord::http(name, version.parse().unwrap());
    r.health = health;
    r
}

/// This node provides `web`; member A (direct, 3 ms) and member C
/// (relayed) provide `api`; a relay is connected and a foreign peer is
/// not shown.
pub(crate) fn snapshot() -> (Snapshot, PeerId, PeerId, PeerId) {
    let me = PeerId::random();
    let (a, c, relay) = (PeerId::random(), PeerId::random(), PeerId::random());
    let mut s = Snapshot::empty(me, Role::Member);
    s.namespace = "team".into();
    s.peers.insert(a, link(PeerKind::Member, true, Some(3)));
    s.peers.insert(c, link(PeerKind::Member, false, None));
    s.peers.insert(relay, link(PeerKind::Relay, true, Some(20)));
    s.peers
        .insert(PeerId::random(), link(PeerKind::Foreign, true, None));
    s.local.insert(
        "web".into(),
        LocalService {
            record: record("web", "0.3.0", Health::Healthy),
            port: 3000,
            health: None,
            scheme: Scheme::Http,
        },
    );
    for (peer, version, health) in [
        (a, "1.4.2", Health::Unknown),
        (c, "2.0.0", Health::Unhealthy),
    ] {
        s.remote.push(RemoteService {
            peer,
            record: record("api", version, health),
            expires: Instant::now() + Duration::from_secs(30),
        });
    }
    (s, a, c, relay)
}

fn edge(service: &str, provider: &PeerId, route: &str, rate: f64) -> (EdgeKey, Stats) {
    (
        EdgeKey {
            service: service.into(),
            provider: provider.to_string(),
            route: route.into(),
        },
        Stats {
            rate,
            errors: 0.0,
            p50_ms: Some(1.5),
            p95_ms: Some(4.0),
            requests: (rate * 10.0) as u64,
        },
    )
}

#[test]
fn the_graph_has_nodes_paths_services_and_request_edges() {
    let (s, a, c, relay) = snapshot();
    let edges = [edge("api", &a, "direct", 2.0)];
    let g = Graph::build(&s, &edges, 10.0);
    assert_eq!(g.node, s.local_peer.to_string());
    assert_eq!(g.nodes[0].kind, "self");
    assert_eq!(
        g.nodes.len(),
        4,
        "self, two members and the relay: {:?}",
        g.nodes
    );
    let path = |p: &PeerId| g.paths.iter().find(|e| e.peer == p.to_string()).unwrap();
    assert_eq!(
        (path(&a).path.as_str(), path(&a).rtt_ms),
        ("direct", Some(3.0))
    );
    assert_eq!((path(&c).path.as_str(), path(&c).rtt_ms), ("relayed", None));
    assert_eq!(path(&relay).path, "direct");
    let names: Vec<_> = g.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    let api = &g.services[0];
    assert_eq!(api.providers.len(), 2);
    let unhealthy = api
        .providers
        .iter()
        .find(|p| p.peer == c.to_string())
        .unwrap();
    assert_eq!(
        (unhealthy.version.as_str(), unhealthy.health.as_str()),
        ("2.0.0", "unhealthy")
    );
    assert!(g.services[1].providers[0].local);
    assert_eq!(g.requests.len(), 1);
    assert_eq!(
        (g.requests[0].stats.rate, g.requests[0].route.as_str()),
        (2.0, "direct")
    );
}

#[test]
fn a_provider_without_a_connection_is_still_a_node() {
    let (mut s, a, _, _) = snapshot();
    s.peers.remove(&a);
    let g = Graph::build(&s, &[], 0.0);
    let node = g.nodes.iter().find(|n| n.peer == a.to_string()).unwrap();
    assert_eq!(node.kind, "unconnected");
    assert!(g.paths.iter().all(|p| p.peer != a.to_string()));
}

#[test]
fn the_json_form_reads_back() {
    let (s, a, _, _) = snapshot();
    let g = Graph::build(&s, &[edge("api", &a, "direct", 2.0)], 10.0);
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(
        json["requests"][0]["p95_ms"], 4.0,
        "stats are flattened: {json}"
    );
    let back: Graph = serde_json::from_value(json).unwrap();
    assert_eq!(back, g);
}

/// The statements of a DOT graph, checked for structure: one `digraph`
/// block, every statement ends with `;`, quotes and brackets balance, and
/// every edge joins declared nodes. Returns (node ids, edges).
pub(crate) fn check_dot(dot: &str) -> (Vec<String>, Vec<(String, String)>) {
    let body = dot
        .strip_prefix("digraph devmesh {\n")
        .and_then(|b| b.strip_suffix("}\n"))
        .expect("one digraph block");
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for line in body.lines() {
        let stmt = line
            .trim()
            .strip_suffix(';')
            .unwrap_or_else(|| panic!("no ; in {line:?}"));
        let ids = quoted(stmt);
        if stmt.starts_with("rankdir=") || stmt.starts_with("label=") {
            continue;
        }
        let rest = &stmt[ids[0].1..];
        if let Some(after) = rest.trim_start().strip_prefix("->") {
            let to = quoted(after);
            edges.push((ids[0].0.clone(), to[0].0.clone()));
        } else {
            nodes.push(ids[0].0.clone());
        }
        let open = stmt.matches('[').count();
        assert_eq!(open, stmt.matches(']').count(), "{line}");
        assert!(open <= 1, "{line}");
    }
    for (from, to) in &edges {
        assert!(
            nodes.contains(from) && nodes.contains(to),
            "edge {from} -> {to} joins undeclared nodes"
        );
    }
    (nodes, edges)
}

/// The quoted strings of `stmt` (unescaped) and the offset after each.
fn quoted(stmt: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut chars = stmt.char_indices();
    while let Some((_, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut text = String::new();
        loop {
            match chars.next().expect("a quoted string ends") {
                (i, '"') => {
                    out.push((text, i + 1));
                    break;
                }
                (_, '\\') => text.push(chars.next().expect("an escape ends").1),
                (_, c) => text.push(c),
            }
        }
    }
    out
}

#[test]
fn dot_output_is_a_well_formed_graph() {
    let (s, a, _, _) = snapshot();
    let mut edges = vec![edge("api", &a, "direct", 2.0)];
    edges.push(edge("ghost\"x", &a, "none", 1.0));
    let g = Graph::build(&s, &edges, 10.0);
    let dot = g.to_dot();
    let (nodes, links) = check_dot(&dot);
    assert_eq!(
        nodes.len(),
        4 + 2 + 1,
        "peers, services, the unknown one:\n{dot}"
    );
    let me = format!("peer:{}", s.local_peer);
    assert!(links.contains(&(me.clone(), "service:api".into())), "{dot}");
    assert!(
        links.contains(&("service:api".into(), format!("peer:{a}"))),
        "{dot}"
    );
    assert!(links.contains(&(me, format!("peer:{a}"))), "{dot}");
    assert!(dot.contains("style=dashed, label=\"relayed\""), "{dot}");
    assert!(
        dot.contains("\"service:ghost\\\"x\""),
        "quotes are escaped: {dot}"
    );
    // Graphviz itself, when installed, must accept it.
    if let Ok(mut child) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dot refused it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}

#[test]
fn the_text_form_names_everything() {
    let (s, a, _, _) = snapshot();
    let g = Graph::build(&s, &[edge("api", &a, "direct", 2.0)], 10.0);
    let text = g.to_text();
    assert!(
        text.contains(&format!("-> {a} member direct rtt 3.0 ms")),
        "{text}"
    );
    assert!(text.contains("2.0.0 unhealthy"), "{text}");
    assert!(text.contains("(this node)"), "{text}");
    assert!(
        text.contains(&format!(
            "api -> {a} direct: 2.0 req/s, p50 1.5 ms, p95 4.0 ms"
        )),
        "{text}"
    );
    assert_eq!(short("12D3KooWAbcdefgh12345678"), "12345678");
    assert_eq!(short(""), "-");
}
