//! The supervisor: one task that runs a project's selected services in
//! dependency order, and the cloneable [`Supervisor`] handle that talks to
//! it (bounded commands with oneshot replies, events on a broadcast).

mod actor;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use mesh_core::health::HealthCheck;
use semver::VersionReq;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Diff, Exit, Failure, ProjectSpec, State, SupervisorError, logs::LogLine};

/// Room of the command channel.
const COMMANDS: usize = 32;
/// Room of the event broadcast; a subscriber that lags re-reads [`Supervisor::ps`].
const EVENTS: usize = 256;
/// Room of the log broadcast; a follower that lags misses lines.
const LOG_FOLLOWERS: usize = 1024;

/// Runs one health check of a service; the daemon plugs in mesh-proxy's
/// checker, a test a fake.
pub trait HealthProbe: Send + Sync + 'static {
    /// Checks `service` on `port` once as `check` says; `true` passes. The
    /// supervisor gives each check `check.timeout` and counts the results
    /// against the thresholds.
    fn check<'a>(
        &'a self,
        service: &'a str,
        port: u16,
        check: &'a HealthCheck,
    ) -> BoxFuture<'a, bool>;
}

/// Finds a dependency on the mesh.
pub trait Resolver: Send + Sync + 'static {
    /// The peer id of a teammate's node that provides `service` healthy in
    /// a version satisfying `requirement`; never this node itself. Called
    /// from the supervisor's task: it must answer at once (read a snapshot).
    fn provider_for(&self, service: &str, requirement: &VersionReq) -> Option<String>;
}

/// A [`Resolver`] for a supervisor without a mesh: every dependency starts
/// locally.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMesh;

impl Resolver for NoMesh {
    fn provider_for(&self, _: &str, _: &VersionReq) -> Option<String> {
        None
    }
}

/// Which services to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The services named (`devmesh up api web`); empty for all of them.
    /// Their dependencies are selected with them. A service named here
    /// always starts locally.
    pub services: Vec<String>,
    /// `--local`: start every dependency locally, never from the mesh.
    pub local: bool,
}

/// What the supervisor reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A service entered `state`.
    State {
        /// The service.
        service: String,
        /// Its new state.
        state: State,
    },
    /// A service is ready: the caller shares it with the mesh when it has
    /// a port (`devmesh: api ready on :3000 (shared)`).
    Ready {
        /// The service.
        service: String,
        /// Its port.
        port: Option<u16>,
    },
    /// A service that was ready no longer is: the caller withdraws it from
    /// the mesh at once.
    Withdrawn {
        /// The service.
        service: String,
    },
    /// A dependency is met by a teammate's node and not started here (again
    /// with the new peer when it fails over to another teammate).
    Remote {
        /// The service.
        service: String,
        /// The teammate's peer id.
        provider: String,
    },
    /// A service ended and restarts after `delay`.
    Restarting {
        /// The service.
        service: String,
        /// How its process ended.
        exit: Exit,
        /// The back-off delay.
        delay: Duration,
    },
    /// A service failed for good.
    Failed {
        /// The service.
        service: String,
        /// Why.
        failure: Failure,
    },
}

/// One row of `devmesh ps`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// Its state.
    pub state: State,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// When it entered its state.
    pub since: SystemTime,
    /// How long its process has run, while it runs.
    pub uptime: Option<Duration>,
    /// The teammate's peer id while it is `remote`.
    pub provider: Option<String>,
    /// Why it is `failed`.
    pub failure: Option<Failure>,
    /// How its latest run ended.
    pub last_exit: Option<Exit>,
    /// It waits, but will not start: only dependencies taken from the mesh
    /// depend on it.
    pub unneeded: bool,
}

/// What to give a supervisor besides the project.
#[derive(Clone)]
pub struct Options {
    /// Which services to run.
    pub selection: Selection,
    /// Runs the `health` checks; needed when a selected service has one.
    pub probe: Option<Arc<dyn HealthProbe>>,
    /// Finds dependencies on the mesh.
    pub resolver: Arc<dyn Resolver>,
    /// The environment every service starts from (a daemon passes the
    /// one of the `devmesh up` that asked); `None` inherits this process's.
    pub environment: Option<Arc<BTreeMap<String, String>>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            probe: None,
            resolver: Arc::new(NoMesh),
            environment: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("selection", &self.selection)
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}

enum Command {
    Start {
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    Ps {
        reply: oneshot::Sender<Vec<ServiceStatus>>,
    },
    Logs {
        service: Option<String>,
        tail: usize,
        reply: oneshot::Sender<Result<Vec<LogLine>, SupervisorError>>,
    },
    Apply {
        project: Box<ProjectSpec>,
        reply: oneshot::Sender<Result<Diff, SupervisorError>>,
    },
    MeshChanged {
        reply: oneshot::Sender<()>,
    },
    Select {
        services: Vec<String>,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    Restart {
        service: String,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    StopAll {
        reply: oneshot::Sender<()>,
    },
}

/// The handle of a running supervisor; clones talk to the same one. When
/// the last handle is dropped the supervisor stops every service (call
/// [`Supervisor::stop_all`] to wait for it).
#[derive(Debug, Clone)]
pub struct Supervisor {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    logs: broadcast::Sender<LogLine>,
}

impl Supervisor {
    /// Takes charge of `project`; nothing starts before [`Supervisor::start`],
    /// so that [`Supervisor::subscribe`] and [`Supervisor::follow`] miss
    /// nothing. An error when the selection names an unknown service, the
    /// dependencies have a cycle or a service checks health without a probe.
    /// Call it within a tokio runtime.
    pub fn spawn(project: ProjectSpec, options: Options) -> Result<Self, SupervisorError> {
        let (commands, rx) = mpsc::channel(COMMANDS);
        let (events, _) = broadcast::channel(EVENTS);
        let (logs, _) = broadcast::channel(LOG_FOLLOWERS);
        let (actor, inbox) = actor::Actor::new(project, options, events.clone(), logs.clone())?;
        tokio::spawn(actor.run(inbox, rx));
        Ok(Self {
            commands,
            events,
            logs,
        })
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Output lines of every service from now on (`devmesh up`, `devmesh
    /// logs -f`).
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.logs.subscribe()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SupervisorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| SupervisorError::Closed)?;
        answer.await.map_err(|_| SupervisorError::Closed)
    }

    /// Starts the selected services in dependency order; returns at once.
    pub async fn start(&self) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Start { reply }).await?
    }

    /// The rows of `devmesh ps`, in start order.
    pub async fn ps(&self) -> Result<Vec<ServiceStatus>, SupervisorError> {
        self.ask(|reply| Command::Ps { reply }).await
    }

    /// The last `tail` lines of `service` (of every service when `None`,
    /// each service's in order).
    pub async fn logs(
        &self,
        service: Option<&str>,
        tail: usize,
    ) -> Result<Vec<LogLine>, SupervisorError> {
        let service = service.map(str::to_owned);
        self.ask(|reply| Command::Logs {
            service,
            tail,
            reply,
        })
        .await?
    }

    /// Hot reload: applies a new version of the project. Changed services
    /// restart, removed ones stop, added ones start; an error (a cycle)
    /// changes nothing.
    pub async fn apply(&self, project: ProjectSpec) -> Result<Diff, SupervisorError> {
        let project = Box::new(project);
        self.ask(|reply| Command::Apply { project, reply }).await?
    }

    /// The mesh changed: remote dependencies whose provider left fail over
    /// to another one, or start locally.
    pub async fn mesh_changed(&self) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::MeshChanged { reply }).await
    }

    /// Also runs `services` (every service when empty) and what they
    /// depend on: a second `devmesh up web` for a project that runs `api`.
    /// An unknown name is an error and changes nothing.
    pub async fn select(&self, services: Vec<String>) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Select { services, reply })
            .await?
    }

    /// Restarts `service` (its files changed): a running one is stopped
    /// and started again with the same settings, one that ended starts
    /// again; a remote or waiting one is left as it is.
    pub async fn restart(&self, service: &str) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        self.ask(|reply| Command::Restart { service, reply })
            .await?
    }

    /// Stops every service, dependents before their dependencies, and
    /// returns once all have exited. Afterwards the supervisor answers `ps`
    /// and `logs` only.
    pub async fn stop_all(&self) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::StopAll { reply }).await
    }
}
