//! The messages of `devmesh up`, `ps`, `logs` and `down`: the daemon runs
//! a project's services (its supervisor), the CLI shows them.
//!
//! A project is named by the absolute path of its devmesh.toml. `up` and
//! `logs --follow` answer with a [`Reply`](crate::Reply) and then keep the
//! connection for a stream of [`ProjectEvent`] lines: [`Client::event`]
//! reads them.
//!
//! [`Client::event`]: crate::Client::event

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

/// [`Request::Up`](crate::Request::Up): run the services of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpRequest {
    /// The project's devmesh.toml, absolute.
    pub project: PathBuf,
    /// The services named (`devmesh up api`); empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// `--local`: start every dependency here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// `--watch`: restart a service when a file below its directory
    /// changes (services with `watch` patterns restart on those anyway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch: bool,
    /// Stop the project when this connection closes (`devmesh up` in the
    /// foreground); without it the daemon keeps running it (`up -d`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
    /// The environment the services start from: the CLI's, so that a
    /// service sees the same `PATH` and variables as in the user's shell.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Answer to [`Request::Up`](crate::Request::Up), before the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpResult {
    pub project: PathBuf,
    /// Every service of the project in start order, for the prefixes.
    pub services: Vec<String>,
}

/// What a running project reports, one per line after the answer to `up`
/// (and, for [`ProjectEvent::Line`], after the answer to `logs --follow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProjectEvent {
    /// A line of a service's output.
    Line(LogLine),
    /// A service is ready; `shared` says whether the mesh has it, `error`
    /// why not when it has a port but could not be shared.
    Ready {
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        shared: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A dependency is met by a teammate's node.
    Remote { service: String, provider: String },
    /// A service ended and restarts after `delay_ms`.
    Restarting {
        service: String,
        /// How it ended: `exit status 1`, `signal SIGKILL`.
        exit: String,
        delay_ms: u64,
    },
    /// A service restarts because its files changed.
    Changed { service: String, path: PathBuf },
    /// A service failed for good.
    Failed { service: String, reason: String },
    /// devmesh.toml was edited and applied.
    Reloaded {
        added: Vec<String>,
        changed: Vec<String>,
        removed: Vec<String>,
    },
    /// Something the user should know that is not about one service
    /// (`[docker] share = true` without a container engine).
    Notice { text: String },
    /// devmesh.toml was edited but cannot be used; nothing changed.
    ReloadFailed { error: String },
    /// Every service is down (`devmesh down`, or the daemon stops): the
    /// last event of the stream.
    Stopped,
    /// The answer to `down` from a `devmesh up` that another `devmesh up`
    /// (or an `up -d`) shares the project with: it keeps running, and this
    /// is the last event of the stream.
    Released,
}

/// One line of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// [`Request::Logs`](crate::Request::Logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub project: PathBuf,
    /// One service; all of them when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Lines of each service from its log.
    pub tail: usize,
    /// Keep the connection and send each new line as it comes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

/// Answer to [`Request::Ps`](crate::Request::Ps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsResult {
    pub project: PathBuf,
    pub services: Vec<PsRow>,
    /// The last edit of devmesh.toml that could not be applied, until one
    /// can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<String>,
}

/// One service of `devmesh ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsRow {
    pub name: String,
    /// `pending`, `starting`, `ready`, `unhealthy`, `restarting`,
    /// `exited`, `failed` or `remote`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Milliseconds its process has run, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// The teammate's peer id while it is `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The port it listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Why it is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// How its latest run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// It is `pending` but will not start: only dependencies taken from
    /// the mesh depend on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unneeded: bool,
}

/// Answer to [`Request::Down`](crate::Request::Down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownResult {
    pub project: PathBuf,
    /// The services that were stopped.
    pub stopped: Vec<String>,
}

/// The service a container's published port is shared as (`devmesh share
/// --docker`, `[docker] share = true`); an error when its `devmesh.health`
/// label is not a health check.
pub fn container_service(
    offer: &mesh_docker::Offer,
) -> Result<crate::ServiceSpec, mesh_core::health::HealthError> {
    use mesh_core::health::{HealthCheck, Probe};
    let health = offer
        .health
        .as_deref()
        .map(|h| Probe::parse(h).map(|p| crate::HealthSpec::from_check(&HealthCheck::new(p))))
        .transpose()?;
    Ok(crate::ServiceSpec {
        name: offer.service.clone(),
        port: offer.port,
        version: offer.version.clone(),
        routes: Vec::new(),
        tags: vec!["docker".into()],
        requires: BTreeMap::new(),
        health,
        h2: false,
        scheme: mesh_core::Scheme::Http,
        protocol: if offer.tcp {
            mesh_core::record::ServiceProtocol::Tcp
        } else {
            mesh_core::record::ServiceProtocol::Http
        },
    })
}
