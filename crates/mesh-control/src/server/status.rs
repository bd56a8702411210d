//! `status` and `peers`: views of the node's snapshot, and the version
//! requirements across the mesh that no provider satisfies.

use std::{net::SocketAddr, time::Instant};

use mesh_core::{
    Multiaddr, PeerId, Provider, Reachability, Reservation, Role, Snapshot,
    record::{ServiceProtocol, ServiceRecord},
};
use mesh_proxy::policy::Routing;

use super::Server;
use crate::{
    AdmissionFailureStatus, ConflictStatus, PeerStatus, RelayStatus, ServiceStatus, Status,
};

/// The URL of service `name` through the front door at `proxy` (empty
/// without one).
pub(super) fn url(proxy: Option<SocketAddr>, name: &str) -> String {
    match proxy {
        Some(addr) => format!("http://{name}.localhost:{}/", addr.port()),
        None => String::new(),
    }
}

/// The node that provides `p`.
fn provider_peer(snapshot: &Snapshot, p: &Provider<'_>) -> PeerId {
    match p {
        Provider::Local(_) => snapshot.local_peer,
        Provider::Remote(r) => r.peer,
    }
}

/// `api@1.4.2 on <peer>`.
fn offer(record: &ServiceRecord, peer: PeerId) -> String {
    format!("{}@{} on {peer}", record.name, record.version)
}

/// One provider of service `name`, as `status` lists it.
fn service_status(
    snapshot: &Snapshot,
    proxy: Option<SocketAddr>,
    name: &str,
    p: &Provider<'_>,
    now: Instant,
) -> ServiceStatus {
    let record = p.record();
    let (route, scheme, connection, port, expires) = match p {
        Provider::Local(l) => (
            "local",
            Some(l.scheme.to_string()),
            None,
            Some(l.port),
            None,
        ),
        Provider::Remote(r) => {
            let connection = match snapshot.peers.get(&r.peer) {
                Some(link) if link.direct => "direct",
                Some(_) => "relayed",
                None => "not-connected",
            };
            let expires = r.expires.saturating_duration_since(now).as_millis() as u64;
            (
                "remote",
                None,
                Some(connection.to_owned()),
                None,
                Some(expires),
            )
        }
    };
    ServiceStatus {
        name: name.to_owned(),
        version: record.version.to_string(),
        provider: provider_peer(snapshot, p).to_string(),
        route: route.to_owned(),
        h2: record.h2,
        scheme,
        connection,
        port,
        protocol: record.protocol.to_string(),
        health: record.health.to_string(),
        health_failure: match p {
            Provider::Local(_) => snapshot.health_failures.get(name).cloned(),
            Provider::Remote(_) => None,
        },
        expires_in_ms: expires,
        // A TCP service is no URL of the front door: its port here, or
        // (set with the listeners) this node's listener.
        url: match (record.protocol, p) {
            (ServiceProtocol::Tcp, Provider::Local(l)) => format!("tcp://127.0.0.1:{}", l.port),
            (ServiceProtocol::Tcp, Provider::Remote(_)) => String::new(),
            _ => url(proxy, name),
        },
        listen: None,
    }
}

fn relay_status(r: &mesh_core::RelayLink) -> RelayStatus {
    let (reservation, error) = match &r.reservation {
        Reservation::Pending => ("pending", None),
        Reservation::Accepted => ("accepted", None),
        Reservation::Failed(e) => ("failed", Some(e.clone())),
    };
    RelayStatus {
        peer_id: r.peer.to_string(),
        address: format!("{}/p2p/{}", r.addr, r.peer),
        reservation: reservation.to_owned(),
        error,
    }
}

/// The answer to `status` for a node in `snapshot`.
pub(super) fn status(
    snapshot: &Snapshot,
    info: &super::ServerInfo,
    conflicts: Vec<ConflictStatus>,
    now: Instant,
) -> Status {
    let services = snapshot
        .service_names()
        .into_iter()
        .flat_map(|name| {
            snapshot
                .providers(name)
                .into_iter()
                .map(move |p| service_status(snapshot, info.proxy_addr, name, &p, now))
        })
        .collect();
    // `/p2p/<id>` once, also for an address that carries it already.
    let with_id = |a: &Multiaddr| match a.iter().last() {
        Some(mesh_core::multiaddr::Protocol::P2p(p)) if p == snapshot.local_peer => a.to_string(),
        _ => format!("{a}/p2p/{}", snapshot.local_peer),
    };
    Status {
        peer_id: snapshot.local_peer.to_string(),
        role: match snapshot.role {
            Role::Member => "member",
            Role::Relay => "relay",
        }
        .to_owned(),
        namespace: snapshot.namespace.clone(),
        has_secret: snapshot.has_secret,
        listen_addrs: snapshot.listen_addrs.iter().map(with_id).collect(),
        external_addrs: snapshot
            .external_addrs
            .iter()
            .filter(|a| !mesh_core::is_relayed(a))
            .map(with_id)
            .collect(),
        observed_addrs: snapshot
            .observed_addrs
            .iter()
            .map(ToString::to_string)
            .collect(),
        reachability: match snapshot.reachability {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
        .to_owned(),
        relays: snapshot.relays.iter().map(relay_status).collect(),
        bootstrap: snapshot.bootstrap.iter().map(ToString::to_string).collect(),
        admission_failures: snapshot
            .admission_failures
            .iter()
            .map(|f| AdmissionFailureStatus {
                peer_id: f.peer.to_string(),
                reason: f.reason.clone(),
                inbound: f.inbound,
            })
            .collect(),
        proxy_addr: info.proxy_addr.map(|a| a.to_string()),
        daemon_version: info.daemon_version.clone(),
        conflicts,
        services,
        listeners: Vec::new(),
        home: None,
    }
}

/// Requirements across the mesh that no provider satisfies: the
/// `requires` of every service every node announces, and this node's
/// `devmesh route --require` settings.
pub(super) fn conflicts(snapshot: &Snapshot, routing: Option<&Routing>) -> Vec<ConflictStatus> {
    let mut asks: Vec<(String, String, String)> = Vec::new();
    for p in snapshot
        .service_names()
        .into_iter()
        .flat_map(|name| snapshot.providers(name))
    {
        let record = p.record();
        for (service, req) in &record.requires {
            asks.push((
                offer(record, provider_peer(snapshot, &p)),
                service.clone(),
                req.clone(),
            ));
        }
    }
    if let Some(routing) = routing {
        for (service, settings) in &routing.table().services {
            if let Some(req) = &settings.require {
                asks.push((
                    "devmesh route on this node".into(),
                    service.clone(),
                    req.to_string(),
                ));
            }
        }
    }
    asks.into_iter()
        .filter_map(|(consumer, service, requirement)| {
            let req = semver::VersionReq::parse(&requirement).ok()?;
            let providers = snapshot.providers(&service);
            if providers.iter().any(|p| req.matches(&p.record().version)) {
                return None;
            }
            let available = providers
                .iter()
                .map(|p| offer(p.record(), provider_peer(snapshot, p)))
                .collect();
            Some(ConflictStatus {
                consumer,
                service,
                requirement,
                available,
            })
        })
        .collect()
}

/// The answer to `peers`.
fn peers(snapshot: &Snapshot) -> Vec<PeerStatus> {
    snapshot
        .peers
        .iter()
        .map(|(peer, link)| PeerStatus {
            peer_id: peer.to_string(),
            addresses: link.addrs.iter().map(ToString::to_string).collect(),
            connection: if link.direct { "direct" } else { "relayed" }.to_owned(),
            kind: link.kind.to_string(),
            rtt_ms: link.rtt.map(|d| d.as_secs_f64() * 1000.0),
            agent: link.agent.clone(),
            services: snapshot
                .remote
                .iter()
                .filter(|r| r.peer == *peer)
                .map(|r| format!("{}@{}", r.record.name, r.record.version))
                .collect(),
        })
        .collect()
}

impl Server {
    pub(super) fn status(&self, now: Instant) -> Status {
        let snapshot = self.node.snapshot();
        let conflicts = conflicts(&snapshot, self.info.routing.as_deref());
        let mut status = status(&snapshot, &self.info, conflicts, now);
        status.home = Some(self.saved.status(&self.info));
        self.add_listeners(&snapshot, &mut status);
        status
    }

    pub(super) fn peers(&self) -> Vec<PeerStatus> {
        peers(&self.node.snapshot())
    }
}
