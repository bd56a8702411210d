//! What the supervisor runs: a project's services as plain data.
//!
//! The supervisor has its own spec types instead of taking
//! [`mesh_config::ServiceConfig`]: they hold resolved values (absolute
//! paths, parsed signal, `${port}` expanded, the version requirements of
//! every dependent) without the spans of the file, and tests and callers
//! build them without TOML. [`ProjectSpec::from_project`] converts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

use mesh_config::{ComposeFile, Condition, Prefer, Project, RestartPolicy, ServiceConfig};
use mesh_core::health::{HealthCheck, Probe};
use mesh_docker::RunSpec;
use nix::sys::signal::Signal;
use semver::VersionReq;

use crate::{Backoff, Graph, SpecError};

/// How a service is started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Launch {
    /// `command`: run through `sh -c`.
    Shell(String),
    /// `run`: the program and its arguments, without a shell.
    Argv(Vec<String>),
    /// A service of the project's Compose file, run as a container.
    Container(Box<mesh_docker::RunSpec>),
}

impl Launch {
    /// The program started: `sh` for a shell command.
    pub fn program(&self) -> &str {
        match self {
            Launch::Shell(_) => "sh",
            Launch::Argv(argv) => argv.first().map_or("", String::as_str),
            Launch::Container(c) => &c.compose.image,
        }
    }
}

/// One service as the supervisor runs it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServiceSpec {
    /// Its name in `devmesh.toml`, and on the mesh.
    pub name: String,
    /// The port it listens on; shared with the mesh once it is ready.
    pub port: Option<u16>,
    /// Its version, as shared.
    pub version: semver::Version,
    /// How to start it; `None` for a dependency that only the mesh can
    /// provide (`devmesh ps` shows it `failed` when no peer does).
    pub launch: Option<Launch>,
    /// Directory it starts in.
    pub cwd: PathBuf,
    /// Environment on top of the daemon's, values expanded.
    pub env: BTreeMap<String, String>,
    /// A dotenv file read at each start; `env` wins over it.
    pub env_file: Option<PathBuf>,
    /// Ready when a line of its output contains this.
    pub ready_log_line: Option<String>,
    /// Ready when this check passes (through the supervisor's probe), and
    /// `unhealthy` while it fails.
    pub health: Option<HealthCheck>,
    /// When it is restarted.
    pub restart: RestartPolicy,
    /// Restarts in a row before it turns `failed`; `None` is no limit.
    pub max_restarts: Option<u32>,
    /// Delays between restarts.
    pub backoff: Backoff,
    /// What it waits for before it starts.
    pub depends_on: BTreeMap<String, Condition>,
    /// Version requirements on its dependencies, for the mesh.
    pub requires: BTreeMap<String, VersionReq>,
    /// Signal sent to its process group to stop it.
    pub stop_signal: Signal,
    /// Time after the stop signal until SIGKILL to the group.
    pub stop_timeout: Duration,
    /// Whether a teammate's provider may stand in for it.
    pub prefer: Prefer,
    /// Glob patterns of files that restart it when they change, absolute
    /// (the file's are relative to devmesh.toml).
    pub watch: Vec<String>,
}

impl ServiceSpec {
    /// A service `name` started with `launch` in `cwd`, with every other
    /// setting at its default (no port, no restarts, SIGTERM then SIGKILL
    /// after 10 s).
    pub fn new(name: impl Into<String>, launch: Option<Launch>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            port: None,
            version: semver::Version::new(0, 0, 0),
            launch,
            cwd: cwd.into(),
            env: BTreeMap::new(),
            env_file: None,
            ready_log_line: None,
            health: None,
            restart: RestartPolicy::No,
            max_restarts: None,
            backoff: Backoff::default(),
            depends_on: BTreeMap::new(),
            requires: BTreeMap::new(),
            stop_signal: Signal::SIGTERM,
            stop_timeout: mesh_config::DEFAULT_STOP_TIMEOUT,
            prefer: Prefer::Mesh,
            watch: Vec::new(),
        }
    }

    /// The spec of `[services.<name>]` of the project in `project_dir`.
    pub fn from_config(
        name: &str,
        config: &ServiceConfig,
        project_dir: &Path,
    ) -> Result<Self, SpecError> {
        let launch = match (&config.command, &config.run) {
            (Some(command), _) => Some(Launch::Shell(command.clone())),
            (None, Some(run)) => Some(Launch::Argv(run.get_ref().clone())),
            (None, None) => None,
        };
        let signal = config.stop_signal();
        let stop_signal = Signal::from_str(signal).map_err(|source| SpecError::StopSignal {
            service: name.to_owned(),
            signal: signal.to_owned(),
            source,
        })?;
        let requires = config
            .requires
            .iter()
            .filter_map(|(dep, req)| Some((dep.clone(), VersionReq::parse(req.get_ref()).ok()?)))
            .collect();
        Ok(Self {
            port: config.port,
            version: config.version(),
            env: config.env(),
            env_file: config.env_file_path(project_dir),
            ready_log_line: config.ready_log_line.as_ref().map(|l| l.get_ref().clone()),
            health: config.health_check(),
            restart: config.restart_policy(),
            max_restarts: config.max_restarts(),
            depends_on: config.depends_on(),
            requires,
            stop_signal,
            stop_timeout: config.stop_timeout(),
            prefer: config.prefer(),
            watch: config
                .watch
                .iter()
                .map(|w| project_dir.join(w.get_ref()).to_string_lossy().into_owned())
                .collect(),
            ..Self::new(name, launch, config.working_dir(project_dir))
        })
    }
}

impl ServiceSpec {
    /// The spec of a Compose service: shared on its first published TCP
    /// port; ready when the engine says healthy (with a `healthcheck`),
    /// else once that port answers (the check of its `devmesh.health`
    /// label, else a TCP connect, every 500 ms), else once started;
    /// restarts, dependencies and stop grace as the file says.
    pub fn from_compose(run: RunSpec, project_dir: &Path) -> Self {
        let c = &run.compose;
        let offer = run.offer();
        let health = offer.as_ref().filter(|_| !run.has_healthcheck()).map(|o| {
            let probe = o
                .health
                .as_deref()
                .and_then(|h| Probe::parse(h).ok())
                .unwrap_or(Probe::Tcp);
            HealthCheck {
                interval: Duration::from_millis(500),
                ..HealthCheck::new(probe)
            }
        });
        Self {
            port: offer.map(|o| o.port),
            health,
            version: semver::Version::parse(&run.version())
                .unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
            restart: c.restart,
            max_restarts: c.max_restarts,
            depends_on: c.depends_on.clone(),
            stop_timeout: run.stop_grace(),
            ..Self::new(
                run.service.clone(),
                Some(Launch::Container(Box::new(run))),
                project_dir,
            )
        }
    }
}

/// The services of one project.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectSpec {
    /// Every service by name, including the mesh-only dependencies (those
    /// in `depends_on` that the file does not declare; they have no
    /// [`Launch`]).
    pub services: BTreeMap<String, ServiceSpec>,
}

impl ProjectSpec {
    /// The services of a loaded `devmesh.toml` and of its Compose file;
    /// an error when their dependencies cannot be ordered (a cycle,
    /// named) or a name is in both files.
    pub fn from_project(
        project: &Project,
        compose: Option<&ComposeFile>,
    ) -> Result<Self, SpecError> {
        let dir = project.path.parent().unwrap_or(Path::new("."));
        let mut services = BTreeMap::new();
        // A service its container runs (`docker = ...` without a command)
        // is not supervised here.
        let in_container = |config: &ServiceConfig| {
            config.docker.is_some() && config.command.is_none() && config.run.is_none()
        };
        for (name, config) in &project.services {
            if in_container(config) {
                continue;
            }
            let spec = ServiceSpec::from_config(name, config, dir)?;
            if let Some(dependency) = spec
                .depends_on
                .keys()
                .find(|d| project.services.get(*d).is_some_and(in_container))
            {
                return Err(SpecError::InContainer {
                    path: project.path.clone(),
                    service: name.clone(),
                    dependency: dependency.clone(),
                });
            }
            services.insert(name.clone(), spec);
        }
        if let Some(file) = compose {
            for name in file.services.keys() {
                if services.contains_key(name) || project.services.contains_key(name) {
                    return Err(SpecError::InBothFiles {
                        path: project.path.clone(),
                        compose: file.path.clone(),
                        service: name.clone(),
                    });
                }
                if let Some(run) = RunSpec::of(file, name) {
                    services.insert(name.clone(), ServiceSpec::from_compose(run, dir));
                }
            }
        }
        let external: Vec<String> = services
            .values()
            .flat_map(|s| s.depends_on.keys())
            .filter(|dep| !services.contains_key(*dep))
            .cloned()
            .collect();
        for name in external {
            let spec = ServiceSpec::new(name.clone(), None, dir);
            services.insert(name, spec);
        }
        let spec = Self { services };
        spec.graph().map_err(|source| SpecError::Graph {
            path: project.path.clone(),
            source,
        })?;
        Ok(spec)
    }

    /// The dependency graph of the services.
    pub fn graph(&self) -> Result<Graph, crate::GraphError> {
        Graph::new(self.services.iter().map(|(name, s)| {
            (
                name.clone(),
                s.depends_on
                    .iter()
                    .map(|(d, c)| (d.clone(), *c))
                    .collect::<Vec<_>>(),
            )
        }))
    }

    /// The version a provider of `service` must have: every dependent's
    /// requirement on it at once (any version when none has one).
    pub fn requirement_for(&self, service: &str) -> VersionReq {
        let comparators = self
            .services
            .values()
            .filter(|s| s.depends_on.contains_key(service))
            .filter_map(|s| s.requires.get(service))
            .flat_map(|req| req.comparators.iter().cloned())
            .collect();
        VersionReq { comparators }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(text: &str) -> Project {
        Project::parse(Path::new("/p/devmesh.toml"), text).unwrap()
    }

    #[test]
    fn converts_a_project() {
        let p = project(
            r#"
[services.db]
port = 5432
run = ["postgres", "-D", "data"]
cwd = "db"
ready_log_line = "ready"
stop_signal = "SIGINT"
restart = "on-failure"
max_restarts = 2

[services.api]
port = 3000
command = "npm start"
env = { PORT = "${port}" }
depends_on = { db = "healthy", auth = "started" }
[services.api.requires]
auth = ">=2.1"

[services.web]
port = 5173
depends_on = { auth = "started" }
[services.web.requires]
auth = "<3"
"#,
        );
        let spec = ProjectSpec::from_project(&p, None).unwrap();
        let db = &spec.services["db"];
        assert_eq!(
            db.launch,
            Some(Launch::Argv(vec![
                "postgres".into(),
                "-D".into(),
                "data".into()
            ]))
        );
        assert_eq!(db.cwd, Path::new("/p/db"));
        assert_eq!(db.stop_signal, Signal::SIGINT);
        assert_eq!(
            (db.restart, db.max_restarts),
            (RestartPolicy::OnFailure, Some(2))
        );
        let api = &spec.services["api"];
        assert_eq!(api.launch, Some(Launch::Shell("npm start".into())));
        assert_eq!(api.launch.as_ref().unwrap().program(), "sh");
        assert_eq!(api.env["PORT"], "3000");
        assert_eq!(api.cwd, Path::new("/p"));
        // `auth` is only on the mesh: a spec without a launch.
        assert_eq!(spec.services["auth"].launch, None);
        assert_eq!(spec.services["web"].launch, None);
        let req = spec.requirement_for("auth");
        assert!(req.matches(&semver::Version::new(2, 5, 0)));
        assert!(!req.matches(&semver::Version::new(3, 0, 0)));
        assert!(!req.matches(&semver::Version::new(2, 0, 0)));
        assert_eq!(spec.requirement_for("db"), VersionReq::STAR);
    }

    #[test]
    fn a_service_in_a_container_is_not_supervised_and_cannot_be_waited_for() {
        let p = project(
            "[services.db]\nport = 5432\ndocker = \"shop_db_1\"\n[services.api]\nport = 1\ncommand = \"serve\"\n",
        );
        let spec = ProjectSpec::from_project(&p, None).unwrap();
        assert_eq!(spec.services.keys().collect::<Vec<_>>(), ["api"]);
        let p = project(
            "[services.db]\nport = 5432\ndocker = \"shop_db_1\"\n[services.api]\nport = 1\ncommand = \"serve\"\ndepends_on = { db = \"started\" }\n",
        );
        let e = ProjectSpec::from_project(&p, None).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "/p/devmesh.toml: service `api` depends on `db`, which runs in a container"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_cycle_names_the_file() {
        let p = project(
            "[services.api]\nport = 1\ndepends_on = { db = \"started\" }\n[services.db]\nport = 2\ndepends_on = { api = \"started\" }\n",
        );
        let e = ProjectSpec::from_project(&p, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/p/devmesh.toml: dependency cycle: api -> db -> api"
        );
    }
}
