//! `devmesh doctor`: what a person needs to know when something does not
//! connect, and what to do about it.

use mesh_control::{ConflictStatus, PeerStatus, Status};
use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// All is well here.
    Ok,
    /// Works, but worse than it could.
    Warn,
    /// Something does not work.
    Problem,
}

/// One thing the doctor noticed, with advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

fn finding(level: Level, text: impl Into<String>) -> Finding {
    Finding {
        level,
        text: text.into(),
    }
}

/// Whether a bootstrap address belongs to a connected peer.
fn bootstrap_connected(addr: &str, peers: &[PeerStatus]) -> bool {
    match addr.rsplit_once("/p2p/") {
        Some((_, id)) => peers.iter().any(|p| p.peer_id == id),
        None => peers
            .iter()
            .any(|p| p.addresses.iter().any(|a| a.starts_with(addr))),
    }
}

/// Examines a node's status and peers.
pub fn examine(status: &Status, peers: &[PeerStatus]) -> Vec<Finding> {
    let mut out = Vec::new();
    if status.listen_addrs.is_empty() {
        out.push(finding(
            Level::Problem,
            "devmeshd listens on no address: check --listen / `listen` in config.toml (for example /ip4/0.0.0.0/tcp/0)",
        ));
    }
    if status.role == "relay" {
        out.push(relay(status, peers));
        return out;
    }
    for f in &status.admission_failures {
        if f.inbound {
            out.push(finding(
                Level::Warn,
                format!(
                    "earlier, peer {} connected and was refused (its problem, not this node's): {}",
                    f.peer_id, f.reason
                ),
            ));
        } else {
            out.push(finding(Level::Problem, f.reason.clone()));
        }
    }
    out.extend(status.conflicts.iter().map(conflict));
    for addr in &status.bootstrap {
        if !bootstrap_connected(addr, peers) {
            out.push(finding(
                Level::Problem,
                format!(
                    "bootstrap peer {addr} is not connected: check the address, that its devmeshd runs (`devmeshd --relay`), and that its port is open to this network"
                ),
            ));
        }
    }
    if status.bootstrap.is_empty() && peers.is_empty() {
        out.push(finding(
            Level::Warn,
            "no bootstrap peer and no peers: only nodes on this LAN can find this node (mDNS). To reach teammates elsewhere, `devmesh join <invite-token>`",
        ));
    }
    let relay_connected = peers.iter().any(|p| p.kind == "relay");
    out.extend(reachability(status, relay_connected));
    out.extend(status.relays.iter().filter(|r| r.reservation == "failed").map(|r| {
        finding(
            Level::Warn,
            format!(
                "relay reservation on {} failed ({}); devmeshd retries when the relay is back",
                r.address,
                r.error.as_deref().unwrap_or("no reason given")
            ),
        )
    }));
    out.extend(members(status, peers));
    if !status.has_secret {
        out.push(finding(
            Level::Warn,
            format!(
                "namespace {} has no secret: anyone who knows its name can join. `devmesh invite` makes one",
                status.namespace
            ),
        ));
    }
    out
}

/// What a relay needs: a public address to hand out.
fn relay(status: &Status, peers: &[PeerStatus]) -> Finding {
    match status.external_addrs.first() {
        None => finding(
            Level::Problem,
            "this relay has no public address to hand out: start it with --external /ip4/<public-ip>/tcp/4001",
        ),
        Some(addr) => finding(
            Level::Ok,
            format!(
                "relay serving {} client(s); members bootstrap with {addr}",
                peers.len()
            ),
        ),
    }
}

/// A version requirement no provider satisfies.
fn conflict(c: &ConflictStatus) -> Finding {
    let available = if c.available.is_empty() {
        "nobody provides it".to_owned()
    } else {
        format!("providers: {}", c.available.join(", "))
    };
    finding(
        Level::Warn,
        format!(
            "{} requires {} {} and no provider satisfies it ({available}): run a matching version or change the requirement; requests get the best available version with an X-DevMesh-Warning header (409 in strict mode)",
            c.consumer, c.service, c.requirement
        ),
    )
}

/// Whether others can reach this node, and through what.
/// Whether every listen address is a loopback one (127.0.0.0/8, ::1).
fn loopback_only(status: &Status) -> bool {
    !status.listen_addrs.is_empty()
        && status
            .listen_addrs
            .iter()
            .all(|a| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/"))
}

fn reachability(status: &Status, relay_connected: bool) -> Option<Finding> {
    if loopback_only(status) {
        return Some(finding(
            Level::Warn,
            "listens only on loopback: only nodes on this machine can connect. To be reachable from the LAN and beyond, listen on 0.0.0.0 (`--listen /ip4/0.0.0.0/tcp/0`, or drop `listen` from config.toml)",
        ));
    }
    match status.reachability.as_str() {
        "private" => {
            let reserved = status.relays.iter().any(|r| r.reservation == "accepted");
            Some(if reserved {
                finding(
                    Level::Ok,
                    "behind a NAT, reachable through the relay (reservation accepted); direct connections come from hole punching",
                )
            } else if !relay_connected {
                finding(
                    Level::Problem,
                    "behind a NAT and no relay: teammates on other networks cannot reach this node. Bootstrap through the team's `devmeshd --relay` node",
                )
            } else {
                finding(
                    Level::Problem,
                    "behind a NAT and the relay has not granted a reservation yet: check that the bootstrap node runs with --relay",
                )
            })
        }
        "public" => Some(finding(
            Level::Ok,
            match status.external_addrs.first() {
                Some(addr) => format!("reachable from outside at {addr}"),
                None => "reachable from outside".to_owned(),
            },
        )),
        _ => None,
    }
}

/// The port of an address's first TCP or UDP part, with whether it is UDP.
fn port_of(addr: &str) -> Option<(bool, u16)> {
    let mut parts = addr.split('/');
    while let Some(part) = parts.next() {
        if part == "tcp" || part == "udp" {
            return Some((part == "udp", parts.next()?.parse().ok()?));
        }
    }
    None
}

/// The IP of an address (`/ip4/<ip>/…` or `/ip6/<ip>/…`).
fn ip_of(addr: &str) -> Option<&str> {
    let mut parts = addr.split('/').skip(1);
    match parts.next()? {
        "ip4" | "ip6" => parts.next(),
        _ => None,
    }
}

/// Why hole punching cannot work from this side, as far as this node's own
/// addresses tell: the NAT changed the ports it listens on (port
/// randomising, "symmetric"), or nothing outside saw it over UDP.
fn punch_obstacles(status: &Status) -> Vec<String> {
    let listen: Vec<(bool, u16)> = status
        .listen_addrs
        .iter()
        .filter(|a| !a.contains("/p2p-circuit"))
        .filter_map(|a| port_of(a))
        .collect();
    let mut out = Vec::new();
    let own_ips: Vec<&str> = status
        .listen_addrs
        .iter()
        .filter_map(|a| ip_of(a))
        .collect();
    // Observed from outside at another IP: behind a NAT. A port there that
    // is none of ours: the NAT picks ports itself.
    let translated: Vec<&String> = status
        .observed_addrs
        .iter()
        .filter(|a| !a.contains("/p2p-circuit"))
        .filter(|a| ip_of(a).is_some_and(|ip| !own_ips.contains(&ip)))
        .filter(|a| port_of(a).is_some_and(|p| !listen.contains(&p)))
        .collect();
    if let Some(seen) = translated.first() {
        out.push(format!(
            "this node's NAT changes its ports (seen from outside as {seen}, a port it does not listen on): a port-randomising (\"symmetric\") NAT defeats hole punching. Fixes: a router setting for endpoint-independent mapping (often \"full cone\" or \"NAT type 2\"), a forwarded port with `--external`, or IPv6"
        ));
    }
    let listens_udp = listen.iter().any(|(udp, _)| *udp);
    let observed_udp = status.observed_addrs.iter().any(|a| a.contains("/udp/"));
    let observed_tcp = status.observed_addrs.iter().any(|a| a.contains("/tcp/"));
    if listens_udp && observed_tcp && !observed_udp {
        out.push(
            "nothing outside has seen this node over UDP (QUIC): UDP looks blocked on this network, so hole punching only has TCP, which more NATs defeat".to_owned(),
        );
    }
    out
}

/// The members connected, and which of them only through the relay.
fn members(status: &Status, peers: &[PeerStatus]) -> Vec<Finding> {
    let members: Vec<&PeerStatus> = peers.iter().filter(|p| p.kind == "member").collect();
    let obstacles = punch_obstacles(status);
    let why = if obstacles.is_empty() {
        "nothing on this side stops it (its NAT keeps ports), so the other side's NAT is likely port-randomising, or it filters UDP and resets TCP: run `devmesh doctor` there".to_owned()
    } else {
        obstacles.join("; ")
    };
    let mut out: Vec<Finding> = members
        .iter()
        .filter(|p| p.connection == "relayed")
        .map(|p| {
            finding(
                Level::Warn,
                format!(
                    "member {} is reached through the relay: hole punching has not worked. Why: {why}. It works meanwhile, with the relay's bandwidth and latency",
                    p.peer_id
                ),
            )
        })
        .collect();
    if members.is_empty() && !status.admission_failures.iter().any(|f| !f.inbound) {
        out.push(finding(
            Level::Warn,
            format!(
                "no other member of namespace {} is connected yet",
                status.namespace
            ),
        ));
    } else if !members.is_empty() {
        let direct = members.iter().filter(|p| p.connection == "direct").count();
        out.push(finding(
            Level::Ok,
            format!(
                "{} member(s) connected, {direct} direct, {} relayed",
                members.len(),
                members.len() - direct
            ),
        ));
    }
    out
}

/// Prints the report for a person.
pub fn print(status: &Status, peers: &[PeerStatus], findings: &[Finding]) {
    println!("node          {}", status.peer_id);
    if status.role == "relay" {
        println!("role          relay");
    } else {
        println!(
            "namespace     {} ({})",
            status.namespace,
            if status.has_secret {
                "secret set"
            } else {
                "no secret"
            }
        );
    }
    for a in &status.listen_addrs {
        println!("listen        {a}");
    }
    for a in &status.observed_addrs {
        println!("seen as       {a}");
    }
    for a in &status.external_addrs {
        println!("external      {a}");
    }
    println!("reachability  {}", status.reachability);
    for r in &status.relays {
        println!(
            "relay         {} (reservation {})",
            r.address, r.reservation
        );
    }
    for p in peers {
        println!(
            "peer          {} {} {} {}",
            p.peer_id,
            p.kind,
            p.connection,
            p.rtt_ms
                .map_or("rtt -".to_owned(), |ms| format!("rtt {ms:.1} ms"))
        );
    }
    println!();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok     ",
            Level::Warn => "warning",
            Level::Problem => "PROBLEM",
        };
        println!("{tag}  {}", f.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            peer_id: "me".into(),
            role: "member".into(),
            namespace: "team".into(),
            has_secret: true,
            listen_addrs: vec!["/ip4/198.18.1.10/tcp/1/p2p/me".into()],
            external_addrs: vec![],
            observed_addrs: vec![],
            reachability: "private".into(),
            relays: vec![],
            bootstrap: vec!["/ip4/203.0.113.10/tcp/4001/p2p/R".into()],
            admission_failures: vec![],
            proxy_addr: Some("127.0.0.1:7700".into()),
            daemon_version: "0".into(),
            services: vec![],
            conflicts: vec![],
            listeners: vec![],
            home: None,
        }
    }

    fn peer(id: &str, kind: &str, connection: &str) -> PeerStatus {
        PeerStatus {
            peer_id: id.into(),
            addresses: vec![],
            connection: connection.into(),
            kind: kind.into(),
            rtt_ms: None,
            agent: None,
            services: vec![],
        }
    }

    fn problems(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.level == Level::Problem)
            .map(|f| f.text.as_str())
            .collect()
    }

    #[test]
    fn unreachable_bootstrap_and_no_relay_are_problems() {
        let f = examine(&status(), &[]);
        let p = problems(&f);
        assert!(p.iter().any(|t| t.contains("bootstrap peer")), "{p:?}");
        assert!(p.iter().any(|t| t.contains("no relay")), "{p:?}");
    }

    #[test]
    fn relayed_member_is_a_warning_and_reservation_is_fine() {
        let mut s = status();
        s.relays.push(mesh_control::RelayStatus {
            peer_id: "R".into(),
            address: "/ip4/203.0.113.10/tcp/4001/p2p/R".into(),
            reservation: "accepted".into(),
            error: None,
        });
        let peers = [peer("R", "relay", "direct"), peer("B", "member", "relayed")];
        let f = examine(&s, &peers);
        assert!(problems(&f).is_empty(), "{f:?}");
        assert!(
            f.iter()
                .any(|f| f.level == Level::Warn && f.text.contains("hole punching")),
            "{f:?}"
        );
    }

    #[test]
    fn a_relayed_member_behind_a_port_changing_nat_says_why() {
        let mut s = status();
        s.listen_addrs = vec![
            "/ip4/198.18.1.10/tcp/4100/p2p/me".into(),
            "/ip4/198.18.1.10/udp/4101/quic-v1/p2p/me".into(),
        ];
        s.observed_addrs = vec!["/ip4/203.0.113.21/tcp/61234".into()];
        let f = examine(
            &s,
            &[peer("R", "relay", "direct"), peer("B", "member", "relayed")],
        );
        let text = &f
            .iter()
            .find(|f| f.text.starts_with("member B is reached through the relay"))
            .expect("a finding for B")
            .text;
        assert!(text.contains("NAT changes its ports"), "{text}");
        assert!(text.contains("/ip4/203.0.113.21/tcp/61234"), "{text}");
        assert!(text.contains("UDP looks blocked"), "{text}");

        // Ports kept on this side: the other side is the one to look at.
        s.observed_addrs = vec![
            "/ip4/203.0.113.21/tcp/4100".into(),
            "/ip4/203.0.113.21/udp/4101/quic-v1".into(),
        ];
        let f = examine(&s, &[peer("B", "member", "relayed")]);
        assert!(
            f.iter()
                .any(|f| f.text.contains("run `devmesh doctor` there")),
            "{f:?}"
        );
    }

    #[test]
    fn admission_failure_is_reported() {
        let mut s = status();
        s.admission_failures
            .push(mesh_control::AdmissionFailureStatus {
                peer_id: "B".into(),
                reason: "secret does not match namespace team".into(),
                inbound: false,
            });
        let f = examine(&s, &[peer("R", "relay", "direct")]);
        assert!(
            problems(&f)
                .iter()
                .any(|t| t.contains("secret does not match")),
            "{f:?}"
        );
    }

    #[test]
    fn a_loopback_node_is_not_called_reachable_from_outside() {
        let mut s = status();
        s.listen_addrs = vec!["/ip4/127.0.0.1/tcp/4/p2p/me".into()];
        s.reachability = "public".into();
        s.external_addrs = vec!["/ip4/127.0.0.1/tcp/4/p2p/me".into()];
        let f = examine(&s, &[]);
        assert!(
            !f.iter().any(|f| f.text.contains("reachable from outside")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|f| f.text.starts_with("listens only on loopback")),
            "{f:?}"
        );
    }

    #[test]
    fn an_outsider_refused_is_a_past_event_not_a_problem() {
        let mut s = status();
        s.bootstrap.clear();
        s.reachability = "unknown".into();
        s.admission_failures
            .push(mesh_control::AdmissionFailureStatus {
                peer_id: "X".into(),
                reason: "secret does not match namespace team".into(),
                inbound: true,
            });
        let f = examine(&s, &[peer("B", "member", "direct")]);
        assert!(problems(&f).is_empty(), "{f:?}");
        assert!(
            f.iter().any(|f| f.level == Level::Warn
                && f.text
                    .starts_with("earlier, peer X connected and was refused")),
            "{f:?}"
        );
    }
}
