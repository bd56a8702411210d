//! Services of a Compose file: each run is one container of the engine.
//!
//! A run prepares the project's network and the image, creates the
//! container (replacing one an earlier `devmesh up` left behind), starts
//! it, sends its output line by line, reports the engine's health when the
//! service has a `healthcheck`, and ends when the container ends. A stop
//! asks the engine to stop it (its stop signal, then SIGKILL after
//! `stop_grace_period`); the container is removed after every run, so none
//! outlives its service.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt as _;
use mesh_core::error::Chain;
use mesh_docker::{Engine, EngineError, Env, Health, Output, RunSpec};
use tokio::{
    io::AsyncWriteExt as _,
    sync::{mpsc, oneshot},
};

use super::{Lines, ProcessEvent, READER_GRACE, RunHandle};
use crate::{Exit, ServiceSpec, SpawnError, logs::Stream};

/// Exit code of a run whose container could not be created or started
/// (the code `docker run` uses for its own errors).
const NOT_STARTED: i32 = 125;
/// How often the engine is asked for the container's health.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// Compose's default healthcheck interval and timeout.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Compose's default failures in a row before unhealthy.
const DEFAULT_RETRIES: u32 = 3;
/// Room in the pipe that turns output chunks into lines.
const PIPE: usize = 64 << 10;

/// Starts run `run` of `spec`, a Compose service; its output, health and
/// end go to `events`. `environment` is the `devmesh up`'s, where the
/// engine is looked for (`DOCKER_HOST`, `XDG_RUNTIME_DIR`).
pub(super) fn spawn(
    spec: &ServiceSpec,
    container: &RunSpec,
    environment: Option<&BTreeMap<String, String>>,
    run: u64,
    events: mpsc::Sender<ProcessEvent>,
) -> RunHandle {
    let (stop, stopped) = oneshot::channel();
    let env = match environment {
        Some(e) => Env {
            docker_host: e.get("DOCKER_HOST").cloned(),
            xdg_runtime_dir: e.get("XDG_RUNTIME_DIR").map(Into::into),
        },
        None => Env::current(),
    };
    let task = Run {
        service: spec.name.clone(),
        container: container.clone(),
        run,
        events,
    };
    tokio::spawn(task.run(env, stopped));
    RunHandle {
        // A container has no process of this machine's to signal.
        pid: 0,
        stop: Some(stop),
    }
}

/// Why a run's container did not start.
#[derive(Debug, thiserror::Error)]
enum NotStarted {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Env(#[from] SpawnError),
}

struct Run {
    service: String,
    container: RunSpec,
    run: u64,
    events: mpsc::Sender<ProcessEvent>,
}

impl Run {
    async fn run(self, env: Env, mut stopped: oneshot::Receiver<()>) {
        let started = tokio::select! {
            started = self.start(&env) => started,
            _ = &mut stopped => {
                // Stopped while preparing: whatever was created goes.
                if let Ok(engine) = Engine::connect(&env).await {
                    let _ = engine.remove(&self.container.container_name()).await;
                }
                return self.exited(None).await;
            }
        };
        let code = match started {
            Ok((engine, id)) => Some(self.supervise(&engine, &id, stopped).await),
            Err(e) => {
                self.say(Stream::Stderr, format!("devmesh: {}", Chain(&e)))
                    .await;
                Some(NOT_STARTED)
            }
        };
        self.exited(code).await;
    }

    /// Network, image, create and start; the engine and the container id.
    async fn start(&self, env: &Env) -> Result<(Engine, String), NotStarted> {
        let engine = Engine::connect(env).await?;
        let mut notes = Vec::new();
        engine
            .prepare(&self.container, &mut |note| notes.push(note))
            .await?;
        for note in notes {
            self.say(Stream::Stdout, format!("devmesh: {note}")).await;
        }
        let environment = self.environment()?;
        let id = engine.create(&self.container, &environment).await?;
        if let Err(e) = engine.start(&id).await {
            let _ = engine.remove(&id).await;
            return Err(e.into());
        }
        tracing::debug!(service = %self.service, container = %id, "service container started");
        Ok((engine, id))
    }

    /// The container's environment: its `env_file`s, then `environment`.
    fn environment(&self) -> Result<Vec<(String, String)>, SpawnError> {
        let mut env = BTreeMap::new();
        for path in &self.container.compose.env_files {
            let env_error = |source| SpawnError::EnvFile {
                path: path.clone(),
                source,
            };
            for pair in dotenvy::from_path_iter(path).map_err(env_error)? {
                let (k, v) = pair.map_err(env_error)?;
                env.insert(k, v);
            }
        }
        env.extend(self.container.compose.env.clone());
        Ok(env.into_iter().collect())
    }

    /// Follows container `id` until it ends, or stops it when asked; its
    /// exit code. The container is removed.
    async fn supervise(&self, engine: &Engine, id: &str, stopped: oneshot::Receiver<()>) -> i32 {
        let output = tokio::spawn(self.pump(engine.output(id)));
        let health = self
            .container
            .has_healthcheck()
            .then(|| tokio::spawn(self.health(engine.clone(), id.to_owned())));
        let code = tokio::select! {
            code = engine.wait(id) => code,
            _ = stopped => {
                if let Err(e) = engine.stop(id, self.container.stop_grace()).await {
                    tracing::warn!(service = %self.service, error = %Chain(&e), "cannot stop the container");
                }
                engine.wait(id).await
            }
        };
        if let Some(health) = health {
            health.abort();
        }
        let abort = output.abort_handle();
        if tokio::time::timeout(READER_GRACE, output).await.is_err() {
            abort.abort();
        }
        if let Err(e) = engine.remove(id).await {
            tracing::warn!(service = %self.service, error = %Chain(&e), "cannot remove the container");
        }
        match code {
            Ok(code) => i32::try_from(code).unwrap_or(i32::MAX),
            Err(e) => {
                self.say(Stream::Stderr, format!("devmesh: {}", Chain(&e)))
                    .await;
                NOT_STARTED
            }
        }
    }

    /// Sends the container's output as lines, stdout and stderr apart.
    fn pump(
        &self,
        output: impl futures::Stream<Item = Output> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let lines = |stream| Lines {
            service: self.service.clone(),
            stream,
            run: self.run,
            events: self.events.clone(),
        };
        let (mut out, out_reader) = tokio::io::duplex(PIPE);
        let (mut err, err_reader) = tokio::io::duplex(PIPE);
        let readers = [
            tokio::spawn(lines(Stream::Stdout).read(out_reader)),
            tokio::spawn(lines(Stream::Stderr).read(err_reader)),
        ];
        async move {
            let mut output = std::pin::pin!(output);
            while let Some(chunk) = output.next().await {
                let written = match chunk {
                    Output::Stdout(bytes) => out.write_all(&bytes).await,
                    Output::Stderr(bytes) => err.write_all(&bytes).await,
                };
                if written.is_err() {
                    break;
                }
            }
            drop((out, err));
            for reader in readers {
                let _ = reader.await;
            }
        }
    }

    /// Reports each change between healthy and unhealthy: as the engine
    /// says, or, while the engine has run no check (Podman without
    /// systemd runs none by itself), from the `healthcheck` run here
    /// through the engine's exec, with Compose's defaults (every 30 s,
    /// unhealthy after 3 failures in a row).
    fn health(&self, engine: Engine, id: String) -> impl Future<Output = ()> + Send + 'static {
        let events = self.events.clone();
        let (service, run) = (self.service.clone(), self.run);
        let check = self.container.compose.healthcheck.clone();
        async move {
            let Some(check) = check else { return };
            let interval = check.interval.unwrap_or(DEFAULT_INTERVAL);
            let timeout = check.timeout.unwrap_or(DEFAULT_INTERVAL);
            let retries = check.retries.unwrap_or(DEFAULT_RETRIES);
            let start_period = check.start_period.unwrap_or_default();
            let started = tokio::time::Instant::now();
            let mut next_check = started + interval;
            let mut failures = 0;
            let mut last = None;
            let mut tick = tokio::time::interval(HEALTH_EVERY);
            loop {
                tick.tick().await;
                let healthy = match engine.health(&id).await {
                    Some((Health::Healthy, _)) => true,
                    Some((Health::Unhealthy, _)) => false,
                    Some((Health::Starting, true)) => continue,
                    Some((Health::Starting, false)) | None => {
                        let now = tokio::time::Instant::now();
                        if now < next_check {
                            continue;
                        }
                        next_check = now + interval;
                        if engine.check(&id, &check.test, timeout).await {
                            failures = 0;
                            true
                        } else {
                            failures += 1;
                            if failures < retries || now < started + start_period {
                                continue;
                            }
                            false
                        }
                    }
                };
                if last != Some(healthy) {
                    last = Some(healthy);
                    let event = ProcessEvent::Health {
                        service: service.clone(),
                        run,
                        healthy,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// A line of devmesh's own in the service's output.
    async fn say(&self, stream: Stream, line: String) {
        let lines = Lines {
            service: self.service.clone(),
            stream,
            run: self.run,
            events: self.events.clone(),
        };
        lines.send(line).await;
    }

    async fn exited(self, code: Option<i32>) {
        let exit = Exit { code, signal: None };
        tracing::debug!(service = %self.service, run = self.run, %exit, "service container ended");
        let event = ProcessEvent::Exited {
            service: self.service,
            run: self.run,
            exit,
        };
        let _ = self.events.send(event).await;
    }
}
