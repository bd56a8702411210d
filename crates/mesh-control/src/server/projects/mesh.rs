//! What a project's supervisor needs from the node: which teammate
//! provides a dependency, and health checks of the services it starts.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use mesh_config::{Project, ServiceConfig};
use mesh_core::{
    NodeHandle, Provider, Scheme, Snapshot,
    health::HealthCheck,
    record::{Health, ServiceProtocol},
};
use mesh_up::{HealthProbe, Resolver};
use semver::{Version, VersionReq};

use crate::{HealthSpec, ServiceSpec};

/// A service a teammate's node provides healthy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Offer {
    service: String,
    peer: String,
    version: Version,
}

/// The healthy services of other nodes in `snapshot`, in a stable order:
/// when they change, the supervisor looks again at its remote dependencies.
pub(super) fn offers(snapshot: &Snapshot) -> Vec<Offer> {
    let mut offers: Vec<Offer> = snapshot
        .service_names()
        .into_iter()
        .flat_map(|name| snapshot.providers(name))
        .filter_map(|p| match p {
            Provider::Remote(r) if r.record.health == Health::Healthy => Some(Offer {
                service: r.record.name.clone(),
                peer: r.peer.to_string(),
                version: r.record.version.clone(),
            }),
            _ => None,
        })
        .collect();
    offers.sort();
    offers
}

/// The supervisor's [`Resolver`]: the node's latest snapshot.
pub(super) struct Mesh(pub(super) NodeHandle);

impl Resolver for Mesh {
    fn provider_for(&self, service: &str, requirement: &VersionReq) -> Option<String> {
        best(&offers(&self.0.snapshot()), service, requirement)
    }
}

/// The newest satisfying offer of `service` (the lowest peer id among
/// equals, so that every node picks the same).
fn best(offers: &[Offer], service: &str, requirement: &VersionReq) -> Option<String> {
    offers
        .iter()
        .filter(|o| o.service == service && requirement.matches(&o.version))
        .max_by(|a, b| a.version.cmp(&b.version).then(b.peer.cmp(&a.peer)))
        .map(|o| o.peer.clone())
}

/// Health checks of the services `up` starts: the front door's own probe
/// (`mesh_proxy::health::probe`), with each service's scheme.
pub(super) struct Loopback {
    schemes: BTreeMap<String, Scheme>,
}

impl Loopback {
    pub(super) fn new(project: &Project) -> Self {
        let schemes = project
            .services
            .iter()
            .map(|(name, service)| {
                let scheme = service.scheme().parse().unwrap_or(Scheme::Http);
                (name.clone(), scheme)
            })
            .collect();
        Loopback { schemes }
    }
}

impl HealthProbe for Loopback {
    fn check<'a>(
        &'a self,
        service: &'a str,
        port: u16,
        check: &'a HealthCheck,
    ) -> BoxFuture<'a, bool> {
        let scheme = self.schemes.get(service).copied().unwrap_or(Scheme::Http);
        Box::pin(async move {
            mesh_proxy::health::probe(port, scheme, &check.probe)
                .await
                .is_ok()
        })
    }
}

/// The service `[services.<name>]` shares once it is ready on `port`.
pub(super) fn share_spec(name: &str, port: u16, config: &ServiceConfig) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        port,
        version: config.version.get_ref().clone(),
        routes: config.routes.iter().map(|r| r.get_ref().clone()).collect(),
        tags: config.tags.clone(),
        requires: config
            .requires
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        health: config.health_check().as_ref().map(HealthSpec::from_check),
        h2: config.http2,
        scheme: config.scheme().parse().unwrap_or(Scheme::Http),
        protocol: if config.is_tcp() {
            ServiceProtocol::Tcp
        } else {
            ServiceProtocol::Http
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::health::Probe;

    fn offer(service: &str, version: &str, peer: &str) -> Offer {
        Offer {
            service: service.into(),
            peer: peer.into(),
            version: Version::parse(version).unwrap(),
        }
    }

    #[test]
    fn the_newest_satisfying_offer_wins() {
        let offers = [
            offer("db", "1.2.0", "peer-a"),
            offer("db", "1.5.0", "peer-c"),
            offer("db", "1.5.0", "peer-b"),
            offer("cache", "1.0.0", "peer-a"),
        ];
        let req = |r: &str| VersionReq::parse(r).unwrap();
        assert_eq!(best(&offers, "db", &req("^1.2")).as_deref(), Some("peer-b"));
        assert_eq!(best(&offers, "db", &req("~1.2")).as_deref(), Some("peer-a"));
        assert_eq!(best(&offers, "db", &req("^2")), None);
        assert_eq!(best(&offers, "web", &req("*")), None);
    }

    #[test]
    fn a_service_of_the_file_is_shared_as_written() {
        let project = Project::parse(
            std::path::Path::new("/p/devmesh.toml"),
            "[services.api]\nport = 3000\nversion = \"1.2.3\"\nroutes = [\"/api\"]\nhealth = \"tcp\"\nscheme = \"https\"\n[services.api.requires]\ndb = \"^15\"\n",
        )
        .unwrap();
        let spec = share_spec("api", 3000, &project.services["api"]);
        assert_eq!(spec.version, "1.2.3");
        assert_eq!(spec.routes, ["/api"]);
        assert_eq!(spec.requires["db"], "^15");
        assert_eq!(spec.scheme, Scheme::Https);
        let check = spec.health.unwrap().to_check().unwrap();
        assert!(matches!(check.probe, Probe::Tcp), "{:?}", check.probe);
    }
}
