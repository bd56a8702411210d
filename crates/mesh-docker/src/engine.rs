//! The container engine: finding its socket, listing the running
//! containers and following their starts and stops; [`lifecycle`] runs
//! the containers of a Compose project.

mod lifecycle;

use std::{
    path::{Path, PathBuf},
    pin::Pin,
};

use bollard::{
    ClientVersion, Docker,
    query_parameters::{EventsOptions, ListContainersOptions},
};
use futures::{Stream, StreamExt as _};

pub use self::lifecycle::{Health, Output};
use crate::{Container, EngineError, Tried};

/// The Docker Engine API version asked for: old enough for Podman 4's
/// compatibility API, new enough for labels, ports and events.
const API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Seconds a request may take.
const TIMEOUT: u64 = 30;

/// A container started or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// It runs now (look at its ports with [`Engine::containers`]).
    Started { id: String },
    /// It stopped, died or was removed.
    Gone { id: String },
}

/// A connection to the engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    socket: PathBuf,
}

/// Where to look for the engine: the `DOCKER_HOST` and `XDG_RUNTIME_DIR`
/// of the user's environment (which a daemon does not share).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub docker_host: Option<String>,
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl Env {
    /// This process's environment.
    pub fn current() -> Self {
        Self {
            docker_host: std::env::var("DOCKER_HOST").ok(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        }
    }

    /// The sockets to try, in order: `DOCKER_HOST`, Docker's, then Podman's
    /// (the user's, then the system's).
    fn candidates(&self) -> Result<Vec<PathBuf>, EngineError> {
        if let Some(host) = self.docker_host.as_deref().filter(|h| !h.is_empty()) {
            let path = host
                .strip_prefix("unix://")
                .ok_or_else(|| EngineError::NotUnix(host.to_owned()))?;
            return Ok(vec![PathBuf::from(path)]);
        }
        let mut found = vec![PathBuf::from("/var/run/docker.sock")];
        if let Some(runtime) = &self.xdg_runtime_dir {
            found.push(runtime.join("podman/podman.sock"));
        }
        found.push(PathBuf::from("/run/podman/podman.sock"));
        Ok(found)
    }
}

impl Engine {
    /// The first engine of `env` that answers a ping; the error names every
    /// socket tried and why each did not do.
    pub async fn connect(env: &Env) -> Result<Self, EngineError> {
        let mut tried = Vec::new();
        for socket in env.candidates()? {
            let reason = match Docker::connect_with_unix(&socket.to_string_lossy(), TIMEOUT, &API) {
                Ok(docker) => match docker.ping().await {
                    Ok(_) => return Ok(Self { docker, socket }),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            tried.push(Tried { socket, reason });
        }
        Err(EngineError::NoEngine { tried })
    }

    /// The socket of the engine.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn api(&self, source: bollard::errors::Error) -> EngineError {
        EngineError::Api {
            socket: self.socket.clone(),
            source,
        }
    }

    /// The running containers.
    pub async fn containers(&self) -> Result<Vec<Container>, EngineError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions::default()))
            .await
            .map_err(|e| self.api(e))?;
        Ok(list
            .into_iter()
            .map(|c| Container {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                published: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| {
                        p.typ
                            .is_none_or(|t| t == bollard::models::PortSummaryTypeEnum::TCP)
                    })
                    .filter_map(|p| Some((p.public_port?, p.private_port)))
                    .collect(),
            })
            .collect())
    }

    /// The starts and stops of containers from now on; the stream ends
    /// with an error when the engine goes away.
    pub fn changes(&self) -> Pin<Box<dyn Stream<Item = Result<Change, EngineError>> + Send>> {
        // Every container event: Docker and Podman name some differently
        // (`die` and `died`), and a caller looks at the list again anyway.
        let filters = [("type".to_owned(), vec!["container".to_owned()])]
            .into_iter()
            .collect();
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let socket = self.socket.clone();
        Box::pin(self.docker.events(Some(options)).filter_map(move |event| {
            let socket = socket.clone();
            async move {
                let event = match event {
                    Ok(event) => event,
                    Err(source) => return Some(Err(EngineError::Api { socket, source })),
                };
                let id = event.actor.and_then(|a| a.id)?;
                match event.action.as_deref()? {
                    "start" | "restart" | "unpause" => Some(Ok(Change::Started { id })),
                    "die" | "died" | "stop" | "kill" | "destroy" | "remove" | "pause"
                    | "cleanup" => Some(Ok(Change::Gone { id })),
                    _ => None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_wins_then_docker_then_podman() {
        let env = Env {
            docker_host: Some("unix:///tmp/x/docker.sock".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
        };
        assert_eq!(
            env.candidates().unwrap(),
            [PathBuf::from("/tmp/x/docker.sock")]
        );
        let env = Env {
            docker_host: None,
            xdg_runtime_dir: Some("/run/user/1000".into()),
        };
        assert_eq!(
            env.candidates().unwrap(),
            [
                PathBuf::from("/var/run/docker.sock"),
                PathBuf::from("/run/user/1000/podman/podman.sock"),
                PathBuf::from("/run/podman/podman.sock"),
            ]
        );
        let tcp = Env {
            docker_host: Some("tcp://127.0.0.1:2375".into()),
            xdg_runtime_dir: None,
        };
        assert!(matches!(tcp.candidates(), Err(EngineError::NotUnix(_))));
    }
}
