//! The local control API between the `devmesh` CLI and `devmeshd`.
//!
//! The daemon listens on a Unix socket in its home directory (mode 0600, in
//! a 0700 directory: only the owner can open it). Each message is one line
//! of JSON: the CLI sends a [`Request`], the daemon answers with a
//! [`Reply`]. A `run` request with `hold: true` keeps its registration only
//! while the connection stays open, so a `devmesh run` that ends in any way
//! (Ctrl-C, SIGKILL) withdraws its service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_control::ControlError> {
//! let mut client = mesh_control::Client::connect(std::path::Path::new("/home/me/.devmesh/devmeshd.sock")).await?;
//! let status: mesh_control::Status = client.call_as(&mesh_control::Request::Status).await?;
//! println!("{}", status.peer_id);
//! # Ok(()) }
//! ```

mod client;
mod error;
pub mod lock;
mod project;
mod server;

use serde::{Deserialize, Serialize};

pub use client::{Client, read_line, write_line};
pub use error::{Cause, ControlError, DialFailure, RequestError, chain};
pub use project::{
    DownResult, LogLine, LogsRequest, ProjectEvent, PsResult, PsRow, UpRequest, UpResult,
    container_service,
};
pub use server::{Server, ServerInfo, secret_path, stored_secret};

/// The default home directory of a node, `~/.devmesh`; `None` without `HOME`.
pub fn default_home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".devmesh"))
}

/// File name of the control socket inside the daemon's home.
pub const SOCKET_NAME: &str = "devmeshd.sock";
/// Longest message line accepted: a `status` of a record table holding
/// [`mesh_core::registry::MAX_REMOTE_SERVICES`] services fits.
pub const MAX_LINE: usize = 16 << 20;

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Node identity, addresses and every known service.
    Status,
    /// Connected peers.
    Peers,
    /// Provide a local service.
    Run {
        service: ServiceSpec,
        /// Withdraw the service when this connection closes.
        hold: bool,
    },
    /// Stop providing a service.
    Stop { name: String },
    /// Connect to peers; with a namespace, move to it (and remember it).
    Join {
        /// Multiaddrs to connect to.
        addrs: Vec<String>,
        /// Namespace to move to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Its secret, hexadecimal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// Move to the namespace as an open one, without a secret.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        open: bool,
    },
    /// Make an invite token for a namespace (creating its secret if needed).
    Invite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Bootstrap addresses to put in the token instead of the node's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        bootstrap: Vec<String>,
        /// Make a new secret even though the namespace has one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rotate: bool,
        /// Go ahead although a new secret drops the members connected now.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        yes: bool,
    },
    /// Show or change how the front door routes. Without a service, changes
    /// the node-wide defaults (`versions`, `retry`).
    Route(RouteSpec),
    /// Run a project's services (`devmesh up`); the answer is followed
    /// by [`ProjectEvent`]s.
    Up(UpRequest),
    /// The services of a running project.
    Ps { project: std::path::PathBuf },
    /// The log of a running project's services.
    Logs(LogsRequest),
    /// Stop a running project's services.
    Down { project: std::path::PathBuf },
    /// Stop the daemon.
    Shutdown,
    /// Listen on loopback for a remote TCP service (docs/tcp.md): on the
    /// provider's port when free, else on `port`; with `remove`, forget it.
    Connect(ConnectSpec),
}

/// What [`Request::Connect`] asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSpec {
    pub service: String,
    /// Port to listen on when the provider's is taken on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Forget the service's setting (its listener stays while a provider
    /// is announced and its port is free).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// A consumer-side listener of a TCP service, as `status` and `connect`
/// show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub service: String,
    /// `127.0.0.1:5432`; none when no port could be bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The port set with `devmesh connect --port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_port: Option<u16>,
    /// Where a new connection goes now: `<peer> (direct)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Why there is no listener, or why the last connection was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What [`Request::Route`] changes; every field left out changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Send the service's requests to this peer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Version requirement of this node's requests: `^2.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
    /// `warn` or `strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<String>,
    /// Keep each client on one provider (by cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
    /// `idempotent`, `all` or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Drop the service's settings first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear: bool,
}

/// A service to provide from a local port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub port: u16,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Version requirements on other services: `{"api": "^2.1"}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub requires: std::collections::BTreeMap<String, String>,
    /// How the daemon checks the backend; none: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// The backend speaks HTTP/2 (announced, so consumers speak it too).
    #[serde(default, skip_serializing_if = "is_false")]
    pub h2: bool,
    /// `http` or `https`: how this node connects to the backend.
    #[serde(default, skip_serializing_if = "is_http")]
    pub scheme: mesh_core::Scheme,
    /// `http` (default) or `tcp`: raw bytes, reached through listeners.
    #[serde(default, skip_serializing_if = "is_http_protocol")]
    pub protocol: mesh_core::record::ServiceProtocol,
}

fn is_http_protocol(p: &mesh_core::record::ServiceProtocol) -> bool {
    *p == mesh_core::record::ServiceProtocol::Http
}

/// A health check as `run` sends it. Omitted numbers take the defaults of
/// [`mesh_core::health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// A path on the backend (`/healthz`), an `http://` URL, or `tcp`.
    pub check: String,
    /// Milliseconds between the starts of two checks.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Milliseconds one check may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passes that make the service healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make the service unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_interval_ms() -> u64 {
    mesh_core::health::DEFAULT_INTERVAL.as_millis() as u64
}

fn default_timeout_ms() -> u64 {
    mesh_core::health::DEFAULT_TIMEOUT.as_millis() as u64
}

fn default_healthy_threshold() -> u32 {
    mesh_core::health::DEFAULT_HEALTHY_THRESHOLD
}

fn default_unhealthy_threshold() -> u32 {
    mesh_core::health::DEFAULT_UNHEALTHY_THRESHOLD
}

impl HealthSpec {
    /// The wire form of `check`.
    pub fn from_check(check: &mesh_core::health::HealthCheck) -> Self {
        Self {
            check: check.probe.to_string(),
            interval_ms: check.interval.as_millis() as u64,
            timeout_ms: check.timeout.as_millis() as u64,
            healthy_threshold: check.healthy_threshold,
            unhealthy_threshold: check.unhealthy_threshold,
        }
    }

    /// The check it describes, validated.
    pub fn to_check(
        &self,
    ) -> Result<mesh_core::health::HealthCheck, mesh_core::health::HealthError> {
        let check = mesh_core::health::HealthCheck {
            probe: mesh_core::health::Probe::parse(&self.check)?,
            interval: std::time::Duration::from_millis(self.interval_ms),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        };
        check.validate()?;
        Ok(check)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_http(s: &mesh_core::Scheme) -> bool {
    *s == mesh_core::Scheme::Http
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    /// `member` or `relay`.
    pub role: String,
    /// The namespace (empty on a relay).
    pub namespace: String,
    /// Whether a secret guards the namespace (the secret is never shown).
    pub has_secret: bool,
    pub listen_addrs: Vec<String>,
    /// Addresses confirmed reachable from outside.
    #[serde(default)]
    pub external_addrs: Vec<String>,
    /// Addresses peers saw this node connect from.
    #[serde(default)]
    pub observed_addrs: Vec<String>,
    /// `public`, `private` or `unknown`.
    pub reachability: String,
    #[serde(default)]
    pub relays: Vec<RelayStatus>,
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Peers that failed admission, with the reason.
    #[serde(default)]
    pub admission_failures: Vec<AdmissionFailureStatus>,
    /// The HTTP front door (none on a relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<String>,
    pub daemon_version: String,
    pub services: Vec<ServiceStatus>,
    /// Version requirements across the mesh that no provider satisfies.
    #[serde(default)]
    pub conflicts: Vec<ConflictStatus>,
    /// Loopback listeners of remote TCP services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// Where the daemon keeps its things, and what it restored at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<HomeStatus>,
}

/// The daemon's files and the setup it restored when it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeStatus {
    pub home: String,
    pub config_file: String,
    /// Where its log goes, when that is a file (a daemon the CLI started
    /// logs to `<home>/devmeshd.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    /// Saved `join <multiaddr>` addresses dialled again at start.
    #[serde(default)]
    pub restored_joins: Vec<String>,
    /// Saved `run --detach` services shared again at start.
    #[serde(default)]
    pub restored_shares: Vec<String>,
}

/// A version requirement that no provider of the service satisfies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStatus {
    /// Who requires it: `web@1.0.0 on <peer>` or `devmesh route on this node`.
    pub consumer: String,
    /// The required service.
    pub service: String,
    pub requirement: String,
    /// The providers there are: `api@1.4.2 on <peer>`; empty when none.
    pub available: Vec<String>,
}

/// Answer to [`Request::Route`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResult {
    /// `warn` or `strict`.
    pub versions: String,
    /// `idempotent`, `all` or `never`.
    pub retry: String,
    /// Every known service and every service with settings.
    pub services: Vec<RouteStatus>,
}

/// Routing of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Requirements this node applies (`devmesh route` and its services' `requires`).
    #[serde(default)]
    pub requirements: Vec<String>,
    pub versions: String,
    pub sticky: bool,
    pub retry: String,
    /// Where a plain request goes now, in order: `api@2.3.0 on <peer> (remote-direct)`.
    pub order: Vec<String>,
    /// Why requests have nowhere to go, when so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Providers set aside after failures, with the time left.
    #[serde(default)]
    pub ejected: Vec<String>,
}

/// A relay the node uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    pub peer_id: String,
    pub address: String,
    /// `pending`, `accepted` or `failed`.
    pub reservation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A peer that failed the admission handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionFailureStatus {
    pub peer_id: String,
    pub reason: String,
    /// The peer connected to this node and was refused: a past event of
    /// the peer's, not a fault of this node.
    #[serde(default)]
    pub inbound: bool,
}

/// One provider of one service, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: String,
    pub provider: String,
    /// `local` or `remote`.
    pub route: String,
    /// The backend speaks HTTP/2.
    #[serde(default, skip_serializing_if = "is_false")]
    pub h2: bool,
    /// For local providers: `http` or `https` to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// For remote providers: `direct`, `relayed` or `not-connected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// For local providers: the backend port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: String,
    /// `unknown` (no check, or not settled yet), `healthy` or `unhealthy`:
    /// live for local providers, as announced for remote ones.
    pub health: String,
    /// For local providers with a health check: why the last failed check
    /// failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failure: Option<String>,
    /// For remote providers: milliseconds until the record expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// URL to open through this node's proxy.
    pub url: String,
    /// For TCP services with a listener here: `127.0.0.1:5432`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    pub addresses: Vec<String>,
    /// `direct` or `relayed`.
    pub connection: String,
    /// `member`, `relay`, `pending`, `foreign`, `rejected` or `client`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub services: Vec<String>,
}

/// Answer to [`Request::Run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub version: String,
    pub url: String,
}

/// Answer to [`Request::Join`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResult {
    /// The namespace the node is in now.
    pub namespace: String,
    /// Peers connected to, one per address that answered.
    pub peers: Vec<String>,
    /// Addresses that could not be reached, with the reason.
    pub unreachable: Vec<String>,
}

/// Answer to [`Request::Invite`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteResult {
    pub token: String,
    pub namespace: String,
    pub bootstrap: Vec<String>,
    /// A new secret was made for the namespace.
    pub created_secret: bool,
    /// This node moved into the namespace to make the invite.
    pub joined: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_stable() {
        let r = Request::Run {
            service: ServiceSpec {
                name: "api".into(),
                port: 3000,
                version: "1.4.2".into(),
                routes: vec![],
                tags: vec![],
                requires: Default::default(),
                health: None,
                h2: false,
                scheme: mesh_core::Scheme::Http,
                protocol: Default::default(),
            },
            hold: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cmd":"run","service":{"name":"api","port":3000,"version":"1.4.2"},"hold":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let h2 = r#"{"cmd":"run","service":{"name":"api","port":3000,"version":"1.4.2","h2":true,"scheme":"https"},"hold":false}"#;
        let Request::Run { service, .. } = serde_json::from_str::<Request>(h2).unwrap() else {
            panic!("not a run request");
        };
        assert!(service.h2);
        assert_eq!(service.scheme, mesh_core::Scheme::Https);
        assert!(
            serde_json::from_str::<Request>(&h2.replace("https", "ftp")).is_err(),
            "unknown schemes are refused"
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let route = Request::Route(RouteSpec {
            service: Some("api".into()),
            sticky: Some(true),
            ..RouteSpec::default()
        });
        let s = serde_json::to_string(&route).unwrap();
        assert_eq!(s, r#"{"cmd":"route","service":"api","sticky":true}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), route);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"route"}"#).unwrap(),
            Request::Route(RouteSpec::default())
        );
    }

    #[test]
    fn health_spec_wire_format_is_stable() {
        let check = mesh_core::health::HealthCheck {
            probe: mesh_core::health::Probe::parse("/healthz").unwrap(),
            interval: std::time::Duration::from_millis(200),
            timeout: std::time::Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let spec = HealthSpec::from_check(&check);
        let s = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            s,
            r#"{"check":"/healthz","interval_ms":200,"timeout_ms":1000,"healthy_threshold":2,"unhealthy_threshold":3}"#
        );
        assert_eq!(spec.to_check().unwrap(), check);
        // Numbers left out take the defaults.
        let short: HealthSpec = serde_json::from_str(r#"{"check":"tcp"}"#).unwrap();
        assert_eq!(
            short.to_check().unwrap(),
            mesh_core::health::HealthCheck::new(mesh_core::health::Probe::Tcp)
        );
        let bad: HealthSpec = serde_json::from_str(r#"{"check":"tcp","interval_ms":5}"#).unwrap();
        assert_eq!(
            bad.to_check().unwrap_err().setting,
            mesh_core::health::Setting::Interval
        );
        let run: Request = serde_json::from_str(
            r#"{"cmd":"run","service":{"name":"api","port":3000,"version":"1.0.0","health":{"check":"/healthz"}},"hold":false}"#,
        )
        .unwrap();
        let Request::Run { service, .. } = run else {
            panic!("not a run request")
        };
        assert_eq!(service.health.unwrap().check, "/healthz");
    }
}
