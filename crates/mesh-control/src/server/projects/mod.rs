//! `up`, `ps`, `logs` and `down`: the projects this daemon runs.
//!
//! Each project (named by its devmesh.toml) has one [`mesh_up::Supervisor`]
//! and one runner task (`runner`) that owns everything else about it: the
//! shares of its ready services, the file watcher (hot reload, `watch`),
//! and the node's view of the mesh for dependencies from teammates. The
//! [`Projects`] table only finds a project's [`Running`] handle; a handle
//! leaves the table when its runner has stopped every service.

mod containers;
mod mesh;
mod runner;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use mesh_config::{ComposeFile, Project};
use mesh_up::{Options, ProjectSpec, Selection, Supervisor, Watcher, watch::WatchSet};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Server;
use crate::{
    DownResult, LogLine, LogsRequest, ProjectEvent, PsResult, PsRow, RequestError, UpRequest,
    UpResult,
};

/// Room of each project's event broadcast; a CLI that lags misses lines.
const EVENTS: usize = 1024;

/// The projects this daemon runs, by devmesh.toml.
#[derive(Default)]
pub(super) struct Projects(Mutex<BTreeMap<PathBuf, Arc<Running>>>);

impl Projects {
    fn get(&self, project: &Path) -> Result<Arc<Running>, RequestError> {
        let path = canonical(project);
        let table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .get(&path)
            .cloned()
            .ok_or(RequestError::NotUp { project: path })
    }

    fn all(&self) -> Vec<Arc<Running>> {
        let table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.values().cloned().collect()
    }

    fn remove(&self, project: &Path) {
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.remove(project);
    }
}

/// A running project, as requests see it.
pub(super) struct Running {
    path: PathBuf,
    supervisor: Supervisor,
    events: broadcast::Sender<ProjectEvent>,
    /// Each service's port, as the latest applied devmesh.toml says.
    ports: Mutex<BTreeMap<String, u16>>,
    /// The last edit of devmesh.toml that could not be applied.
    reload_error: Mutex<Option<String>>,
    /// Every service in start order, for the CLI's prefixes.
    order: Mutex<Vec<String>>,
    /// The foreground `devmesh up`s that hold the project: it stops when
    /// the last goes, unless an `up -d` left it to the daemon.
    holders: Mutex<Holders>,
    /// The latest `ready` or `remote` event of each service, for a `devmesh
    /// up` that attaches to the running project (its editor waits for the
    /// ready line).
    replay: Mutex<BTreeMap<String, ProjectEvent>>,
    /// Asks the runner to stop every service.
    stop: CancellationToken,
    /// Cancelled once every service is down.
    stopped: CancellationToken,
}

/// Who keeps a project running.
#[derive(Debug, Default)]
struct Holders {
    held: usize,
    detached: bool,
}

impl Running {
    /// One more `devmesh up` wants the project: in the foreground (`hold`)
    /// or detached.
    fn hold(&self, hold: bool) {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        if hold {
            holders.held += 1;
        } else {
            holders.detached = true;
        }
    }

    /// A foreground `devmesh up` lets go: the project stops when it was the
    /// last and no `up -d` wants it; `true` when it stops.
    pub(super) fn release(&self) -> bool {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        holders.held = holders.held.saturating_sub(1);
        let stops = holders.held == 0 && !holders.detached;
        if stops {
            self.stop.cancel();
        }
        stops
    }

    /// The events that tell an attaching `devmesh up` where each service
    /// stands.
    pub(super) fn replay(&self) -> Vec<ProjectEvent> {
        let replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        replay.values().cloned().collect()
    }

    /// Keeps `event` for [`Running::replay`] when it says where `service`
    /// stands, forgets the last one when the service moved on.
    pub(super) fn remember(&self, service: &str, event: Option<&ProjectEvent>) {
        let mut replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Some(event) => replay.insert(service.to_owned(), event.clone()),
            None => replay.remove(service),
        };
    }

    /// Events from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<ProjectEvent> {
        self.events.subscribe()
    }

    fn result(&self) -> UpResult {
        UpResult {
            project: self.path.clone(),
            services: self
                .order
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Stops every service and returns once all are down.
    pub(super) async fn down(&self) {
        self.stop.cancel();
        self.stopped.cancelled().await;
    }

    fn set_spec(&self, spec: &ProjectSpec) -> Result<(), RequestError> {
        let graph = spec.graph()?;
        *self.order.lock().unwrap_or_else(PoisonError::into_inner) =
            graph.start_order(&graph.select(&[])?);
        let ports = spec
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.port?)))
            .collect();
        *self.ports.lock().unwrap_or_else(PoisonError::into_inner) = ports;
        Ok(())
    }

    fn set_reload_error(&self, error: Option<String>) {
        *self
            .reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// `devmesh up` for a project that runs already: also runs the services it
/// names (all when none).
async fn attach(
    running: Arc<Running>,
    request: UpRequest,
) -> Result<(UpResult, Arc<Running>, broadcast::Receiver<ProjectEvent>), RequestError> {
    let events = running.subscribe();
    running.supervisor.select(request.services).await?;
    running.hold(request.hold);
    info!(project = %running.path.display(), "another devmesh up for the project");
    Ok((running.result(), running, events))
}

/// The project of `path`, its Compose file (read with `env`, the
/// variables of the `devmesh up`) and what the supervisor runs.
fn load(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(Project, Option<ComposeFile>, ProjectSpec), RequestError> {
    let project = Project::load(path).map_err(RequestError::Project)?;
    let compose = ComposeFile::load(&project, env).map_err(RequestError::Project)?;
    let spec = ProjectSpec::from_project(&project, compose.as_ref())?;
    Ok((project, compose, spec))
}

/// The path a project is known by: its devmesh.toml with links resolved.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

impl Server {
    /// Starts the services of `request.project`, or, when it runs already,
    /// those of them that do not run yet; the answer, the project and its
    /// events from before the first service started.
    pub(super) async fn up(
        self: &Arc<Self>,
        request: UpRequest,
    ) -> Result<(UpResult, Arc<Running>, broadcast::Receiver<ProjectEvent>), RequestError> {
        let path = canonical(&request.project);
        if let Ok(running) = self.projects.get(&path) {
            return attach(running, request).await;
        }
        let (project, compose, spec) = load(&path, &request.env)?;
        let watcher = Watcher::new(&path, WatchSet::new(&spec, &path, request.watch)?)?;
        let options = Options {
            selection: Selection {
                services: request.services.clone(),
                local: request.local,
            },
            probe: Some(Arc::new(mesh::Loopback::new(&project))),
            resolver: Arc::new(mesh::Mesh(self.node.clone())),
            environment: Some(Arc::new(request.env.clone())),
        };
        let supervisor = Supervisor::spawn(spec.clone(), options)?;
        let (events, _) = broadcast::channel(EVENTS);
        let running = Arc::new(Running {
            path: path.clone(),
            supervisor: supervisor.clone(),
            events,
            ports: Mutex::default(),
            reload_error: Mutex::default(),
            order: Mutex::default(),
            holders: Mutex::default(),
            replay: Mutex::default(),
            stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
        });
        running.set_spec(&spec)?;
        let raced = {
            let mut table = self
                .projects
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let raced = table.get(&path).cloned();
            if raced.is_none() {
                table.insert(path.clone(), running.clone());
            }
            raced
        };
        if let Some(running) = raced {
            // Another `devmesh up` of the project came first.
            return attach(running, request).await;
        }
        running.hold(request.hold);
        let first = running.subscribe();
        let runner = runner::Runner::new(
            self.clone(),
            running.clone(),
            runner::Files { project, compose },
            request.watch,
            watcher,
            request.env,
        );
        tokio::spawn(runner.run());
        if let Err(e) = supervisor.start().await {
            running.down().await;
            return Err(e.into());
        }
        info!(project = %path.display(), "project up");
        Ok((running.result(), running, first))
    }

    /// The project of `project`, for a stream of its events.
    pub(super) fn project(&self, project: &Path) -> Result<Arc<Running>, RequestError> {
        self.projects.get(project)
    }

    /// `devmesh ps`.
    pub(super) async fn ps(&self, project: &Path) -> Result<PsResult, RequestError> {
        let running = self.projects.get(project)?;
        let rows = running.supervisor.ps().await?;
        let ports = running
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let services = rows
            .into_iter()
            .map(|s| PsRow {
                port: ports.get(&s.name).copied(),
                state: s.state.to_string(),
                pid: s.pid.filter(|p| *p != 0),
                restarts: s.restarts,
                uptime_ms: s.uptime.map(|u| u.as_millis() as u64),
                provider: s.provider,
                failure: s.failure.map(|f| f.reason()),
                last_exit: s.last_exit.map(|e| e.to_string()),
                unneeded: s.unneeded,
                name: s.name,
            })
            .collect();
        let reload_error = running
            .reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(PsResult {
            project: running.path.clone(),
            services,
            reload_error,
        })
    }

    /// `devmesh logs`: the last lines of each service (or of one).
    pub(super) async fn logs(&self, request: &LogsRequest) -> Result<Vec<LogLine>, RequestError> {
        let running = self.projects.get(&request.project)?;
        let lines = running
            .supervisor
            .logs(request.service.as_deref(), request.tail)
            .await?;
        Ok(lines.into_iter().map(runner::log_line).collect())
    }

    /// `devmesh down`.
    pub(super) async fn down(&self, project: &Path) -> Result<DownResult, RequestError> {
        let running = self.projects.get(project)?;
        let stopped = running
            .supervisor
            .ps()
            .await?
            .into_iter()
            .filter(|s| s.state.is_running() || s.state == mesh_up::State::Restarting)
            .map(|s| s.name)
            .collect();
        running.down().await;
        Ok(DownResult {
            project: running.path.clone(),
            stopped,
        })
    }

    /// Stops the services of every project (the daemon stops); returns
    /// once all are down. Each service's `stop_timeout` bounds it.
    pub async fn stop_projects(&self) {
        let all = self.projects.all();
        futures::future::join_all(all.iter().map(|p| p.down())).await;
    }
}
