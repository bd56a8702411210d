//! `up`, `ps`, `logs` and `down`: the projects this daemon runs.
//!
//! Each project (named by its devmesh.toml) has one [`mesh_up::Supervisor`]
//! and one runner task (`runner`) that owns everything else about it: the
//! shares of its ready services, the file watcher (hot reload, `watch`),
//! and the node's view of the mesh for dependencies from teammates. The
//! [`Projects`] table only finds a project's [`Running`] handle; a handle
//! leaves the table when its runner has stopped every service.

mod mesh;
mod runner;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use mesh_config::Project;
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
    /// Asks the runner to stop every service.
    stop: CancellationToken,
    /// Cancelled once every service is down.
    stopped: CancellationToken,
}

impl Running {
    /// Events from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<ProjectEvent> {
        self.events.subscribe()
    }

    /// Asks the runner to stop every service; returns at once.
    pub(super) fn stop_soon(&self) {
        self.stop.cancel();
    }

    /// Stops every service and returns once all are down.
    pub(super) async fn down(&self) {
        self.stop.cancel();
        self.stopped.cancelled().await;
    }

    fn set_ports(&self, spec: &ProjectSpec) {
        let ports = spec
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.port?)))
            .collect();
        *self.ports.lock().unwrap_or_else(PoisonError::into_inner) = ports;
    }

    fn set_reload_error(&self, error: Option<String>) {
        *self
            .reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// The path a project is known by: its devmesh.toml with links resolved.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

impl Server {
    /// Starts the services of `request.project`; the answer, the project
    /// and its events from before the first service started.
    pub(super) async fn up(
        self: &Arc<Self>,
        request: UpRequest,
    ) -> Result<(UpResult, Arc<Running>, broadcast::Receiver<ProjectEvent>), RequestError> {
        let path = canonical(&request.project);
        if self.projects.get(&path).is_ok() {
            return Err(RequestError::AlreadyUp { project: path });
        }
        let project = Project::load(&path).map_err(RequestError::Project)?;
        let spec = ProjectSpec::from_project(&project)?;
        let watcher = Watcher::new(&path, WatchSet::new(&spec, &path, request.watch)?)?;
        let options = Options {
            selection: Selection {
                services: request.services,
                local: request.local,
            },
            probe: Some(Arc::new(mesh::Loopback::new(&project))),
            resolver: Arc::new(mesh::Mesh(self.node.clone())),
            environment: Some(Arc::new(request.env)),
        };
        let services: Vec<String> = spec.graph()?.start_order(&spec.graph()?.select(&[])?);
        let supervisor = Supervisor::spawn(spec.clone(), options)?;
        let (events, first) = broadcast::channel(EVENTS);
        let running = Arc::new(Running {
            path: path.clone(),
            supervisor: supervisor.clone(),
            events,
            ports: Mutex::default(),
            reload_error: Mutex::default(),
            stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
        });
        running.set_ports(&spec);
        {
            let mut table = self
                .projects
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if table.contains_key(&path) {
                return Err(RequestError::AlreadyUp { project: path });
            }
            table.insert(path.clone(), running.clone());
        }
        let runner = runner::Runner::new(
            self.clone(),
            running.clone(),
            project,
            request.watch,
            watcher,
        );
        tokio::spawn(runner.run());
        if let Err(e) = supervisor.start().await {
            running.down().await;
            return Err(e.into());
        }
        info!(project = %path.display(), "project up");
        Ok((
            UpResult {
                project: path,
                services,
            },
            running,
            first,
        ))
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
                pid: s.pid,
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
