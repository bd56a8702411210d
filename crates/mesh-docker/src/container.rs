//! What a running container offers (pure): its published TCP ports, and
//! the service each is shared as.
//!
//! Labels on the container decide first (`devmesh.service`,
//! `devmesh.version`, `devmesh.health`), so a Compose file can declare
//! them; then the Compose service label (`com.docker.compose.service`),
//! the container's name and a semver tag of its image.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Label naming the service a container is shared as.
pub const LABEL_SERVICE: &str = "devmesh.service";
/// Label giving the service's semantic version.
pub const LABEL_VERSION: &str = "devmesh.version";
/// Label giving the health check (a path such as `/healthz`, or `tcp`).
pub const LABEL_HEALTH: &str = "devmesh.health";
/// Label `tcp` shares the port as a raw TCP service (a database), not HTTP.
pub const LABEL_PROTOCOL: &str = "devmesh.protocol";
/// The label Compose puts on the containers of a service.
pub const LABEL_COMPOSE: &str = "com.docker.compose.service";

/// A running container, as the engine lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Its name, without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `(host port, container port)` of each published TCP port, one
    /// entry per host address (IPv4 and IPv6 bindings come separately).
    pub published: Vec<(u16, u16)>,
}

/// One published port of a container, as the service devmesh proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// The proposed service name.
    pub service: String,
    pub container: String,
    pub image: String,
    /// The port on this machine.
    pub port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// From `devmesh.version`, else a semver tag of the image, else
    /// `0.0.0`.
    pub version: String,
    /// From `devmesh.health`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `devmesh.protocol = tcp`: a raw TCP service.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
}

/// What `containers` offer: one entry per published port (a port bound
/// on both IPv4 and IPv6 once), in container and port order. The first
/// port of a container gets the container's service name, the others the
/// name with `-<container port>`. Containers without a published port
/// offer nothing. `only` keeps the containers with that label value.
pub fn offers(containers: &[Container], only: Option<(&str, &str)>) -> Vec<Offer> {
    let mut sorted: Vec<&Container> = containers
        .iter()
        .filter(|c| only.is_none_or(|(k, v)| c.labels.get(k).is_some_and(|l| l == v)))
        .collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for c in sorted {
        let ports: BTreeSet<(u16, u16)> = c.published.iter().map(|&(h, p)| (p, h)).collect();
        let base = service_name(c);
        let version = version(c);
        for (i, (container_port, port)) in ports.into_iter().enumerate() {
            out.push(Offer {
                service: if i == 0 {
                    base.clone()
                } else {
                    format!("{base}-{container_port}")
                },
                container: c.name.clone(),
                image: c.image.clone(),
                port,
                container_port,
                version: version.clone(),
                health: c.labels.get(LABEL_HEALTH).cloned(),
                tcp: c.labels.get(LABEL_PROTOCOL).is_some_and(|p| p == "tcp"),
            });
        }
    }
    out
}

/// The service name: the `devmesh.service` label, the Compose service, or
/// the container's name, made a valid service name (lowercase letters,
/// digits and `-`, at most 63).
fn service_name(c: &Container) -> String {
    let raw = c
        .labels
        .get(LABEL_SERVICE)
        .or_else(|| c.labels.get(LABEL_COMPOSE))
        .unwrap_or(&c.name);
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect();
    name = name.trim_matches('-').to_owned();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.truncate(63);
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        format!("container-{}", &c.id.get(..12).unwrap_or(&c.id))
    } else {
        name
    }
}

/// The version: the `devmesh.version` label, else the image tag when it is
/// a semantic version (`postgres:15.4.0`, `api:v1.2.3`), else `0.0.0`.
fn version(c: &Container) -> String {
    version_of(&c.image, &c.labels)
}

/// The version a container is shared with: its `devmesh.version` label,
/// else a semver tag of its image (a leading `v` allowed), else `0.0.0`.
pub(crate) fn version_of(image: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(v) = labels.get(LABEL_VERSION) {
        return v.clone();
    }
    // The tag follows the last `:` after the last `/` (a registry may
    // have a port: `registry:5000/api:1.2.3`).
    let last = image.rsplit('/').next().unwrap_or(image);
    last.rsplit_once(':')
        .map(|(_, tag)| tag.trim_start_matches('v'))
        .and_then(|tag| semver::Version::parse(tag).ok())
        .map_or_else(|| "0.0.0".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
        published: &[(u16, u16)],
    ) -> Container {
        Container {
            id: format!("{name}0123456789abcdef"),
            name: name.into(),
            image: image.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            published: published.to_vec(),
        }
    }

    #[test]
    fn each_published_port_is_one_offer_and_both_address_families_count_once() {
        let all = [
            container(
                "shop_db_1",
                "postgres:15.4.0",
                &[(LABEL_COMPOSE, "db")],
                &[(5432, 5432), (5432, 5432)],
            ),
            container(
                "web",
                "registry:5000/team/web:v2.1.0",
                &[],
                &[(8080, 80), (8443, 443)],
            ),
            container("worker", "worker:latest", &[], &[]),
            container(
                "API_Server",
                "api",
                &[
                    (LABEL_SERVICE, "api"),
                    (LABEL_VERSION, "3.0.0"),
                    (LABEL_HEALTH, "/healthz"),
                ],
                &[(3000, 3000)],
            ),
        ];
        let found = offers(&all, None);
        let rows: Vec<(&str, u16, u16, &str)> = found
            .iter()
            .map(|o| {
                (
                    o.service.as_str(),
                    o.port,
                    o.container_port,
                    o.version.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("api", 3000, 3000, "3.0.0"),
                ("db", 5432, 5432, "15.4.0"),
                ("web", 8080, 80, "2.1.0"),
                ("web-443", 8443, 443, "2.1.0"),
            ]
        );
        assert_eq!(found[0].health.as_deref(), Some("/healthz"));
        assert!(!found[0].tcp);
        assert_eq!(found[1].container, "shop_db_1");
    }

    #[test]
    fn names_become_service_names_and_a_label_filter_keeps_what_it_names() {
        let odd = container("My__App.v2", "x", &[("devmesh.share", "true")], &[(1, 1)]);
        assert_eq!(service_name(&odd), "my-app-v2");
        let empty = container("___", "x", &[], &[(1, 1)]);
        assert_eq!(service_name(&empty), "container-___012345678");
        assert_eq!(version(&container("a", "api:latest", &[], &[])), "0.0.0");
        assert_eq!(
            version(&container("a", "localhost/tiny:1.2.3", &[], &[])),
            "1.2.3"
        );
        let other = container("b", "x", &[], &[(2, 2)]);
        let only = offers(&[odd, other], Some(("devmesh.share", "true")));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].service, "my-app-v2");
    }
}
