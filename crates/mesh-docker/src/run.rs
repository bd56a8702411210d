//! A Compose service as the container `devmesh up` creates (pure): its
//! name, labels, network and the engine's create body.

use std::{collections::HashMap, time::Duration};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, NetworkingConfig,
    PortBinding as EnginePort,
};
use mesh_config::{ComposeFile, ComposeService, Mount};

use crate::{
    Offer,
    container::{LABEL_HEALTH, LABEL_PROTOCOL, version_of},
};

/// Label on every container `devmesh up` creates: it may remove one left
/// over from an earlier run.
pub const LABEL_UP: &str = "devmesh.up";
/// The label Compose puts on the containers and networks of a project.
pub const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// Default time between the stop signal and SIGKILL (Compose's).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// One service of a Compose project, to run as a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The Compose project name.
    pub project: String,
    /// The service name.
    pub service: String,
    /// The service as the Compose file declares it.
    pub compose: ComposeService,
}

impl RunSpec {
    /// Service `name` of `file`.
    pub fn of(file: &ComposeFile, name: &str) -> Option<Self> {
        Some(Self {
            project: file.project.clone(),
            service: name.to_owned(),
            compose: file.services.get(name)?.clone(),
        })
    }

    /// The version the service is shared with: its `devmesh.version`
    /// label, else a semver tag of its image, else `0.0.0`.
    pub fn version(&self) -> String {
        version_of(&self.compose.image, &self.compose.labels)
    }

    /// What the running container offers the mesh: its first published
    /// TCP port, under the service's name, with the health and protocol
    /// of its `devmesh.*` labels. `None` when it publishes no TCP port on
    /// a fixed host port.
    pub fn offer(&self) -> Option<Offer> {
        let port = self.compose.shared_port()?;
        let binding = self
            .compose
            .ports
            .iter()
            .find(|p| p.protocol == "tcp" && p.host == Some(port))?;
        Some(Offer {
            service: self.service.clone(),
            container: self.container_name(),
            image: self.compose.image.clone(),
            port,
            container_port: binding.container,
            version: self.version(),
            health: self.compose.labels.get(LABEL_HEALTH).cloned(),
            tcp: self
                .compose
                .labels
                .get(LABEL_PROTOCOL)
                .is_some_and(|p| p == "tcp"),
        })
    }

    /// The container's name: `container_name`, else Compose's
    /// `<project>-<service>-1`.
    pub fn container_name(&self) -> String {
        self.compose
            .container_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-1", self.project, self.service))
    }

    /// The project's network, when the service uses it (no
    /// `network_mode`).
    pub fn network(&self) -> Option<String> {
        self.compose
            .network_mode
            .is_none()
            .then(|| format!("{}_default", self.project))
    }

    /// Time between the stop signal and SIGKILL.
    pub fn stop_grace(&self) -> Duration {
        self.compose.stop_grace_period.unwrap_or(DEFAULT_STOP_GRACE)
    }

    /// Whether the engine reports the container's health.
    pub fn has_healthcheck(&self) -> bool {
        self.compose.healthcheck.is_some()
    }

    /// The labels of the container: the file's, Compose's own and
    /// [`LABEL_UP`].
    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.compose.labels.clone().into_iter().collect();
        labels.insert(LABEL_COMPOSE_PROJECT.into(), self.project.clone());
        labels.insert(crate::container::LABEL_COMPOSE.into(), self.service.clone());
        labels.insert("com.docker.compose.container-number".into(), "1".into());
        labels.insert(LABEL_UP.into(), "1".into());
        labels
    }

    /// The engine's create body, with `env` (the service's environment,
    /// its `env_file`s already read) as the container's environment.
    pub fn create_body(&self, env: &[(String, String)]) -> ContainerCreateBody {
        let c = &self.compose;
        let mut bindings: HashMap<String, Option<Vec<EnginePort>>> = HashMap::new();
        for p in &c.ports {
            bindings
                .entry(format!("{}/{}", p.container, p.protocol))
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(EnginePort {
                    host_ip: p.host_ip.clone(),
                    host_port: p.host.map(|h| h.to_string()),
                });
        }
        let mut binds = Vec::new();
        let mut anonymous = Vec::new();
        for m in &c.mounts {
            let (source, target, read_only) = match m {
                Mount::Bind {
                    source,
                    target,
                    read_only,
                } => (source.to_string_lossy().into_owned(), target, *read_only),
                Mount::Volume {
                    name: Some(name),
                    target,
                    read_only,
                } => (format!("{}_{name}", self.project), target, *read_only),
                Mount::Volume {
                    name: None, target, ..
                } => {
                    anonymous.push(target.clone());
                    continue;
                }
            };
            binds.push(if read_only {
                format!("{source}:{target}:ro")
            } else {
                format!("{source}:{target}")
            });
        }
        let nanos = |d: Option<Duration>| d.and_then(|d| i64::try_from(d.as_nanos()).ok());
        let healthcheck = c.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period),
            start_interval: None,
        });
        let networking_config = self.network().map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings {
                    aliases: Some(vec![self.service.clone()]),
                    ..Default::default()
                },
            )])),
        });
        ContainerCreateBody {
            image: Some(c.image.clone()),
            cmd: c.command.clone(),
            entrypoint: c.entrypoint.clone(),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: Some(bindings.keys().cloned().collect()),
            labels: Some(self.labels()),
            healthcheck,
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            stop_signal: c.stop_signal.clone(),
            stop_timeout: i64::try_from(self.stop_grace().as_secs()).ok(),
            volumes: (!anonymous.is_empty()).then_some(anonymous),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: (!binds.is_empty()).then_some(binds),
                network_mode: c.network_mode.clone().or_else(|| self.network()),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mesh_config::ComposeFile;

    use super::*;

    fn spec(text: &str) -> RunSpec {
        let file = ComposeFile::parse(Path::new("/p/compose.yaml"), text, &|_| None, None).unwrap();
        let (service, compose) = file.services.into_iter().next().unwrap();
        RunSpec {
            project: file.project,
            service,
            compose,
        }
    }

    #[test]
    fn the_body_publishes_ports_mounts_volumes_and_the_healthcheck() {
        let s = spec(
            "services:\n  web:\n    image: tiny:1\n    ports: [\"127.0.0.1:18080:80\", \"9000\"]\n    volumes: [\"./www:/www:ro\", \"data:/data\", \"/tmp/anon\"]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 2s\n    stop_grace_period: 3s\n",
        );
        assert_eq!(s.container_name(), "p-web-1");
        assert_eq!(s.network().as_deref(), Some("p_default"));
        let body = s.create_body(&[("A".into(), "1".into())]);
        let host = body.host_config.unwrap();
        let ports = host.port_bindings.unwrap();
        let web = ports["80/tcp"].as_ref().unwrap();
        assert_eq!(web[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(web[0].host_port.as_deref(), Some("18080"));
        assert_eq!(ports["9000/tcp"].as_ref().unwrap()[0].host_port, None);
        assert_eq!(
            host.binds.unwrap(),
            ["/p/./www:/www:ro".to_owned(), "p_data:/data".to_owned()]
        );
        assert_eq!(body.volumes.unwrap(), ["/tmp/anon".to_owned()]);
        assert_eq!(host.network_mode.as_deref(), Some("p_default"));
        let health = body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(2_000_000_000));
        assert_eq!(body.stop_timeout, Some(3));
        assert_eq!(body.env.unwrap(), ["A=1".to_owned()]);
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_UP], "1");
        assert_eq!(labels[LABEL_COMPOSE_PROJECT], "p");
        let aliases = body.networking_config.unwrap().endpoints_config.unwrap()["p_default"]
            .aliases
            .clone();
        assert_eq!(aliases.unwrap(), ["web".to_owned()]);
    }

    #[test]
    fn network_mode_replaces_the_project_network() {
        let s = spec(
            "services:\n  web:\n    image: tiny:1\n    network_mode: host\n    container_name: mine\n",
        );
        assert_eq!(s.container_name(), "mine");
        assert_eq!(s.network(), None);
        let body = s.create_body(&[]);
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("host")
        );
        assert!(body.networking_config.is_none());
    }
}
