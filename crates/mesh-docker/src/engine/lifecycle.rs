//! Running one container of a Compose project: its network and image,
//! create and start, its output, health and end, stop and removal.

use std::time::Duration;

use bollard::{
    errors::Error as ApiError,
    exec::StartExecResults,
    models::{ExecConfig, HealthStatusEnum, NetworkCreateRequest},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, LogsOptions, RemoveContainerOptions,
        StopContainerOptions,
    },
};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use super::Engine;
use crate::{
    EngineError,
    run::{LABEL_COMPOSE_PROJECT, LABEL_UP, RunSpec},
};

/// A chunk of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// The health the engine reports for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

fn not_found(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Makes sure the project's network exists and the image is here
    /// (pulling it when not); `progress` hears what is being done.
    pub async fn prepare(
        &self,
        spec: &RunSpec,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), EngineError> {
        if let Some(network) = spec.network() {
            match self.docker.inspect_network(&network, None).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {
                    let labels = [(LABEL_COMPOSE_PROJECT.to_owned(), spec.project.clone())];
                    let request = NetworkCreateRequest {
                        name: network.clone(),
                        labels: Some(labels.into_iter().collect()),
                        ..Default::default()
                    };
                    match self.docker.create_network(request).await {
                        Ok(_) => progress(format!("created network {network}")),
                        // Another service of the project made it first.
                        Err(ApiError::DockerResponseServerError {
                            status_code: 409, ..
                        }) => {}
                        Err(e) => return Err(self.api(e)),
                    }
                }
                Err(e) => return Err(self.api(e)),
            }
        }
        let image = &spec.compose.image;
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(self.api(e)),
        }
        progress(format!("pulling {image}"));
        let options = CreateImageOptions {
            from_image: Some(image.clone()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    if let Some(status) = info.status.filter(|_| info.progress_detail.is_none()) {
                        progress(status);
                    }
                }
                Err(source) => {
                    return Err(EngineError::Pull {
                        image: image.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates the container of `spec` with `env`, replacing one that an
    /// earlier `devmesh up` left behind; refuses to touch one it did not
    /// create. Its id.
    pub async fn create(
        &self,
        spec: &RunSpec,
        env: &[(String, String)],
    ) -> Result<String, EngineError> {
        let name = spec.container_name();
        match self.docker.inspect_container(&name, None).await {
            Ok(found) => {
                let ours = found
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.get(LABEL_UP).is_some_and(|v| v == "1"));
                if !ours {
                    return Err(EngineError::Exists { name });
                }
                self.remove(&name).await?;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(self.api(e)),
        }
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), spec.create_body(env))
            .await
            .map_err(|e| self.api(e))?;
        Ok(created.id)
    }

    /// Starts the container `id`.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.api(e))
    }

    /// The output of container `id` from its start, as it comes.
    pub fn output(&self, id: &str) -> impl Stream<Item = Output> + Send + use<> {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        self.docker
            .logs(id, Some(options))
            .take_while(|chunk| std::future::ready(chunk.is_ok()))
            .filter_map(|chunk| async move {
                match chunk.ok()? {
                    bollard::container::LogOutput::StdErr { message } => {
                        Some(Output::Stderr(message))
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        Some(Output::Stdout(message))
                    }
                    bollard::container::LogOutput::StdIn { .. } => None,
                }
            })
    }

    /// The health of container `id` as the engine reports it, and whether
    /// the engine has run a check yet; `None` when it has no healthcheck
    /// or is gone.
    pub async fn health(&self, id: &str) -> Option<(Health, bool)> {
        let found = self.docker.inspect_container(id, None).await.ok()?;
        let health = found.state?.health?;
        let checked = health.log.as_ref().is_some_and(|l| !l.is_empty());
        let status = match health.status? {
            HealthStatusEnum::HEALTHY => Health::Healthy,
            HealthStatusEnum::UNHEALTHY => Health::Unhealthy,
            HealthStatusEnum::STARTING => Health::Starting,
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => return None,
        };
        Some((status, checked))
    }

    /// Runs a healthcheck `test` (`["CMD", …]` or `["CMD-SHELL", "…"]`)
    /// in container `id`, for an engine that does not run them itself
    /// (Podman without systemd); whether it exited 0 within `timeout`.
    pub async fn check(&self, id: &str, test: &[String], timeout: Duration) -> bool {
        let cmd = match test.split_first() {
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            Some((kind, [line])) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()]
            }
            _ => return false,
        };
        let run = async {
            let config = ExecConfig {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let exec = self.docker.create_exec(id, config).await.ok()?;
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await.ok()?
            {
                while output.next().await.is_some() {}
            }
            self.docker.inspect_exec(&exec.id).await.ok()?.exit_code
        };
        matches!(tokio::time::timeout(timeout, run).await, Ok(Some(0)))
    }

    /// Waits until container `id` ends; its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        let mut wait = self.docker.wait_container(id, None);
        match wait.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error.
            Some(Err(ApiError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.api(e)),
            None => Err(EngineError::Closed {
                socket: self.socket.clone(),
            }),
        }
    }

    /// Asks container `id` to stop: its stop signal, then SIGKILL after
    /// `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(ApiError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(self.api(e)),
        }
    }

    /// Removes container `id` with its anonymous volumes, stopping it
    /// first when it runs.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.api(e)),
        }
    }
}
