//! The task that runs one project next to its supervisor: shares each
//! ready service with the mesh and withdraws it, turns the supervisor's
//! events into [`ProjectEvent`]s for the CLI, applies edits of
//! devmesh.toml, restarts services whose files changed, and tells the
//! supervisor when what teammates provide changed.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use mesh_config::{ComposeFile, Project};
use mesh_docker::RunSpec;
use mesh_up::{Change, Event, Watcher, watch::WatchSet};
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::{info, warn};

use super::{Running, mesh};
use crate::{
    LogLine, ProjectEvent, RequestError, ServiceSpec, chain, container_service, server::Server,
};

/// The wire form of a line of output.
pub(super) fn log_line(line: mesh_up::LogLine) -> LogLine {
    LogLine {
        stream: match line.stream {
            mesh_up::Stream::Stderr => "stderr",
            _ => "stdout",
        }
        .to_owned(),
        service: line.service,
        line: line.line,
    }
}

/// The files of a project as applied last: what each service shares.
pub(super) struct Files {
    pub(super) project: Project,
    pub(super) compose: Option<ComposeFile>,
}

impl Files {
    /// What `service` shares once it is ready on `port`: as devmesh.toml
    /// says, or as its Compose service's container offers it.
    fn share_spec(&self, service: &str, port: u16) -> Option<ServiceSpec> {
        if let Some(config) = self.project.services.get(service) {
            return Some(mesh::share_spec(service, port, config));
        }
        let offer = RunSpec::of(self.compose.as_ref()?, service)?.offer()?;
        let mut spec = container_service(&offer).ok()?;
        spec.tags = vec!["compose".into()];
        Some(spec)
    }
}

pub(super) struct Runner {
    server: Arc<Server>,
    running: Arc<Running>,
    files: Files,
    watch_all: bool,
    watcher: Watcher,
    /// The id the shares of this project are held under, like a held
    /// `devmesh run` connection's.
    owner: u64,
    events: broadcast::Receiver<Event>,
    logs: broadcast::Receiver<mesh_up::LogLine>,
    /// What each shared service was shared as.
    shares: BTreeMap<String, ServiceSpec>,
    /// The environment of the `devmesh up` that started the project:
    /// where the container engine is, the Compose file's variables.
    env: BTreeMap<String, String>,
}

impl Runner {
    pub(super) fn new(
        server: Arc<Server>,
        running: Arc<Running>,
        files: Files,
        watch_all: bool,
        watcher: Watcher,
        env: BTreeMap<String, String>,
    ) -> Self {
        let owner = server.new_owner();
        let events = running.supervisor.subscribe();
        let logs = running.supervisor.follow();
        Self {
            server,
            running,
            files,
            watch_all,
            watcher,
            owner,
            events,
            logs,
            shares: BTreeMap::new(),
            env,
        }
    }

    /// Tells every `devmesh up` and `logs -f` of the project, and keeps
    /// where each service stands for those that attach later.
    fn send(&self, event: ProjectEvent) {
        match &event {
            ProjectEvent::Ready { service, .. } | ProjectEvent::Remote { service, .. } => {
                self.running.remember(service, Some(&event));
            }
            ProjectEvent::Restarting { service, .. }
            | ProjectEvent::Failed { service, .. }
            | ProjectEvent::Changed { service, .. } => self.running.remember(service, None),
            ProjectEvent::Reloaded { removed, .. } => {
                for service in removed {
                    self.running.remember(service, None);
                }
            }
            _ => {}
        }
        let _ = self.running.events.send(event);
    }

    /// Runs until the project is asked to stop, then stops every service.
    pub(super) async fn run(mut self) {
        if self.files.project.docker.share {
            let engine_env = mesh_docker::Env {
                docker_host: self.env.get("DOCKER_HOST").cloned(),
                xdg_runtime_dir: self.env.get("XDG_RUNTIME_DIR").map(Into::into),
            };
            super::containers::spawn(
                self.server.clone(),
                self.owner,
                &self.files.project.docker,
                engine_env,
                self.running.events.clone(),
                self.running.stop.child_token(),
            );
        }
        let mut mesh = self.server.node.watch();
        let mut offers = mesh::offers(&mesh.borrow_and_update());
        let stop = self.running.stop.clone();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                // Lines first: the line that made a service ready comes
                // before its ready event.
                line = self.logs.recv() => self.forward(line),
                event = self.events.recv() => match event {
                    Ok(event) => self.on_event(event).await,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                change = self.watcher.next() => self.on_change(change).await,
                changed = mesh.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = mesh::offers(&mesh.borrow_and_update());
                    if now != offers {
                        offers = now;
                        let _ = self.running.supervisor.mesh_changed().await;
                    }
                }
            }
        }
        self.shut_down().await;
    }

    fn forward(&self, line: Result<mesh_up::LogLine, RecvError>) {
        if let Ok(line) = line {
            self.send(ProjectEvent::Line(log_line(line)));
        }
    }

    /// Withdraws every share, stops every service (forwarding what they
    /// print meanwhile) and leaves the table.
    async fn shut_down(mut self) {
        self.server.release(self.owner).await;
        let supervisor = self.running.supervisor.clone();
        let stopping = supervisor.stop_all();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                line = self.logs.recv() => self.forward(line),
                event = self.events.recv() => match event {
                    Ok(Event::Failed { .. } | Event::Ready { .. }) | Err(_) => {}
                    Ok(event) => self.on_event(event).await,
                },
            }
        }
        while let Ok(line) = self.logs.try_recv() {
            self.send(ProjectEvent::Line(log_line(line)));
        }
        self.server.projects.remove(&self.running.path);
        info!(project = %self.running.path.display(), "project down");
        self.send(ProjectEvent::Stopped);
        self.running.stopped.cancel();
    }

    async fn on_event(&mut self, event: Event) {
        let event = match event {
            Event::Ready { service, port } => self.share(service, port).await,
            Event::Withdrawn { service } => {
                self.running.remember(&service, None);
                if self.shares.remove(&service).is_some() {
                    let _ = self.server.stop(&service).await;
                }
                return;
            }
            Event::Remote { service, provider } => ProjectEvent::Remote { service, provider },
            Event::Restarting {
                service,
                exit,
                delay,
            } => ProjectEvent::Restarting {
                service,
                exit: exit.to_string(),
                delay_ms: delay.as_millis() as u64,
            },
            Event::Failed { service, failure } => ProjectEvent::Failed {
                service,
                reason: failure.reason(),
            },
            _ => return,
        };
        self.send(event);
    }

    /// Shares `service` now that it is ready, when it has a port.
    async fn share(&mut self, service: String, port: Option<u16>) -> ProjectEvent {
        let Some(port) = port else {
            return ProjectEvent::Ready {
                service,
                port: None,
                shared: false,
                error: None,
            };
        };
        let result = match self.files.share_spec(&service, port) {
            Some(spec) => {
                let shared = self.server.run(spec.clone(), true, self.owner).await;
                if shared.is_ok() {
                    self.shares.insert(service.clone(), spec);
                }
                shared.map(|_| ())
            }
            None => Err(RequestError::NotProvided {
                name: service.clone(),
            }),
        };
        if let Err(e) = &result {
            warn!(service, error = %chain(e), "cannot share a ready service");
        }
        ProjectEvent::Ready {
            service,
            port: Some(port),
            shared: result.is_ok(),
            error: result.err().map(|e| chain(&e)),
        }
    }

    async fn on_change(&mut self, change: Change) {
        match change {
            Change::Config => self.reload().await,
            Change::Sources { service, path } => {
                info!(service, path = %path.display(), "files changed; restarting");
                if self.running.supervisor.restart(&service).await.is_ok() {
                    self.send(ProjectEvent::Changed { service, path });
                }
            }
            _ => {}
        }
    }

    /// Applies the edited devmesh.toml; a file that cannot be used changes
    /// nothing and is reported.
    async fn reload(&mut self) {
        let path = self.running.path.clone();
        match self.apply(&path).await {
            Ok(event) => {
                self.running.set_reload_error(None);
                self.send(event);
            }
            Err(e) => {
                let error = chain(&e);
                warn!(project = %path.display(), error, "devmesh.toml not applied");
                self.running.set_reload_error(Some(error.clone()));
                self.send(ProjectEvent::ReloadFailed { error });
            }
        }
    }

    /// Shares again each service still shared whose record the edit
    /// changed without restarting it (its routes, tags, requirements).
    async fn reshare(&mut self) {
        let mut changed = Vec::new();
        for (name, shared) in &self.shares {
            if let Some(spec) = self.files.share_spec(name, shared.port)
                && spec != *shared
            {
                changed.push(spec);
            }
        }
        for spec in changed {
            let name = spec.name.clone();
            match self.server.run(spec.clone(), true, self.owner).await {
                Ok(_) => {
                    self.shares.insert(name, spec);
                }
                Err(e) => {
                    warn!(service = name, error = %chain(&e), "cannot share the edited service")
                }
            }
        }
    }

    async fn apply(&mut self, path: &Path) -> Result<ProjectEvent, RequestError> {
        let (project, compose, spec) = super::load(path, &self.env)?;
        let set = WatchSet::new(&spec, path, self.watch_all)?;
        let diff = self.running.supervisor.apply(spec.clone()).await?;
        self.watcher.rewatch(set)?;
        self.running.set_spec(&spec)?;
        self.files = Files { project, compose };
        self.reshare().await;
        let names = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect();
        info!(
            added = ?diff.added, changed = ?diff.changed, removed = ?diff.removed,
            "devmesh.toml applied"
        );
        Ok(ProjectEvent::Reloaded {
            added: names(&diff.added),
            changed: names(&diff.changed),
            removed: names(&diff.removed),
        })
    }
}
