//! The errors of `devmesh up`.

use std::{io, path::PathBuf};

/// A project whose services cannot be put in an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// `depends_on` goes round in a circle; `cycle` starts and ends with the
    /// same service. The user reads `dependency cycle: api -> db -> api`.
    #[error("dependency cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The services of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A service depends on one the project does not have.
    #[error("service `{service}` depends on `{dependency}`, which the project does not have")]
    UnknownDependency {
        /// The dependent.
        service: String,
        /// The missing dependency.
        dependency: String,
    },
    /// A service asked for by name (`devmesh up NAME`) is not in the project.
    #[error("the project has no service `{service}`")]
    UnknownService {
        /// The name asked for.
        service: String,
    },
}

/// A `devmesh.toml` service that cannot become a [`ServiceSpec`](crate::ServiceSpec).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `stop_signal` names no signal of this system.
    #[error("service `{service}`: {signal} is not a signal of this system")]
    StopSignal {
        /// The service.
        service: String,
        /// The name given.
        signal: String,
        /// Why it did not parse.
        #[source]
        source: nix::Error,
    },
    /// A service depends on one that a container runs, which `devmesh up`
    /// does not start or watch.
    #[error(
        "{}: service `{service}` depends on `{dependency}`, which runs in a container (docker = ...); devmesh up does not start or wait for containers: remove `{dependency}` from its depends_on and share the container with `devmesh share --docker`",
        path.display()
    )]
    InContainer {
        /// The `devmesh.toml`.
        path: PathBuf,
        /// The dependent.
        service: String,
        /// The service in a container.
        dependency: String,
    },
    /// A service is declared in devmesh.toml and in the Compose file.
    #[error(
        "service `{service}` is declared in {} and in {}: rename one of them",
        path.display(),
        compose.display()
    )]
    InBothFiles {
        /// The project's devmesh.toml.
        path: PathBuf,
        /// The Compose file.
        compose: PathBuf,
        /// The service.
        service: String,
    },
    /// The dependencies of the project cannot be ordered.
    #[error("{}: {source}", path.display())]
    Graph {
        /// The `devmesh.toml` at fault.
        path: PathBuf,
        /// What is wrong with the dependencies.
        #[source]
        source: GraphError,
    },
}

/// A service process that could not be started; `devmesh ps` shows it as
/// the reason of a `failed` service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The service has neither `command` nor `run`.
    #[error("it has no `command` or `run` to start it with")]
    NoCommand,
    /// Its `env_file` could not be read or parsed.
    #[error("cannot read env_file {}", path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: dotenvy::Error,
    },
    /// The program could not be started (not found, not executable, `cwd`
    /// missing).
    #[error("cannot start `{program}` in {}", cwd.display())]
    Exec {
        /// The program: `sh` for a `command`.
        program: String,
        /// The directory it was to start in.
        cwd: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
}

/// A request to the supervisor that did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor task has ended.
    #[error("the supervisor has stopped")]
    Closed,
    /// The services were stopped with `stop_all`; a new supervisor starts
    /// them again.
    #[error("the project's services were stopped")]
    Stopped,
    /// The request names a service the project does not have.
    #[error("the project has no service `{service}`")]
    UnknownService {
        /// The name asked for.
        service: String,
    },
    /// A service checks `health` but the supervisor was given no probe.
    #[error("service `{service}` has a health check but no health probe was given")]
    NoProbe {
        /// The service.
        service: String,
    },
    /// The project's dependencies cannot be ordered; nothing was changed.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Files of a project that cannot be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A `watch` pattern is not a glob.
    #[error("service `{service}`: watch pattern {pattern:?} is not a glob")]
    Pattern {
        /// The service.
        service: String,
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
    /// The system refused to watch a file or directory (too many watches:
    /// raise `fs.inotify.max_user_watches`).
    #[error("cannot watch {}", path.display())]
    Watch {
        /// What was to be watched.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}
