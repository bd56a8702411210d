//! Errors of the control API: the client's [`ControlError`] and the
//! daemon's [`RequestError`], whose text is the answer the CLI prints.
//!
//! A message does not repeat its source: the whole text is the error with
//! its chain of sources ([`chain`]). Where a cause sits inside a message
//! (`"x" is not a multiaddr (<cause>); expected ...`) it is a plain field,
//! not a source, so it is not printed twice.

use std::{error::Error, str::FromStr, time::Duration};

use mesh_core::{Multiaddr, PeerId};

/// A cause another crate reports only as text, kept as an error so it can
/// travel as a source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// `error` with each of its sources, joined by `: `
/// ([`mesh_core::error::Chain`]): the text an answer carries.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    mesh_core::error::Chain(error).to_string()
}

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("control socket")]
    Io(#[from] std::io::Error),
    #[error("devmeshd closed the control connection")]
    Closed,
    /// A message that is not the JSON expected.
    #[error("unreadable answer from devmeshd")]
    Protocol(#[source] serde_json::Error),
    /// A message line longer than [`crate::MAX_LINE`].
    #[error("unreadable answer from devmeshd: message over {max} bytes")]
    TooLong { max: usize },
    /// The daemon refused the request; the message says why.
    #[error("{0}")]
    Refused(String),
}

/// A peer `join` could not connect to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// The node gave up on every address of the peer.
    #[error("{addr}: {error}")]
    Failed {
        /// The peer's addresses, `a or b`.
        addr: String,
        error: mesh_core::Error,
    },
    /// No address answered in time.
    #[error("{addr}: no connection within {} s", after.as_secs())]
    TimedOut { addr: String, after: Duration },
}

/// Why the daemon refused a control request. The text is what the CLI
/// prints, so each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request line was not a request.
    #[error("bad request")]
    BadRequest(#[source] ControlError),
    #[error("encoding the answer")]
    Encode(#[source] serde_json::Error),
    /// The node refused or has stopped.
    #[error(transparent)]
    Node(#[from] mesh_core::Error),
    /// A service name that cannot be announced.
    #[error(transparent)]
    ServiceName(#[from] mesh_core::record::RecordError),
    #[error("service {name:?} is not provided by this node; `devmesh status` lists the services")]
    NotProvided { name: String },
    #[error(
        "invalid version {version:?} for service {service}: {error}; use a semantic version such as 1.4.2"
    )]
    BadVersion {
        service: String,
        version: String,
        error: semver::Error,
    },
    #[error("service {service}: port 0 is not a backend port; pass --port <port>")]
    PortZero { service: String },
    #[error(
        "service {service}: a TCP service has no routes and no HTTP/2; drop --route and --http2, or share it as HTTP"
    )]
    TcpWithHttpSettings { service: String },
    #[error(
        "{service} is not a known TCP service: no provider announces it and no port was given; pass --port <port> to listen for it before it appears"
    )]
    ConnectWithoutPort { service: String },
    #[error(
        "{service} is an HTTP service; open it through the front door (http://{service}.localhost:<proxy-port>/)"
    )]
    ConnectToHttp { service: String },
    #[error("this node has no TCP listeners (a relay runs no proxy)")]
    NoListeners,
    #[error("saving the listener settings to {}", .path.display())]
    SaveConnects {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "service {service}: {requirement:?} is not a version requirement on {required} ({error}); write it like ^2.1"
    )]
    BadRequires {
        service: String,
        required: String,
        requirement: String,
        error: semver::Error,
    },
    #[error("service {service}: health check `{}`", source.setting.config_key())]
    BadHealth {
        service: String,
        #[source]
        source: mesh_core::health::HealthError,
    },
    #[error(
        "{addr:?} is not a multiaddr ({error}); expected one like /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
    )]
    BadMultiaddr {
        addr: String,
        error: <Multiaddr as FromStr>::Err,
    },
    #[error("bootstrap address {addr:?} is not a multiaddr")]
    BadBootstrap {
        addr: String,
        #[source]
        source: <Multiaddr as FromStr>::Err,
    },
    #[error("this node is a relay; relays serve every namespace and join none")]
    RelayJoins,
    #[error("a relay is in no namespace: pass --namespace <name> for the team's namespace")]
    RelayNeedsNamespace,
    /// A new secret would cut off members connected now.
    #[error(
        "a new secret for namespace {namespace} drops {} connected now: {}; they must join again with the new token. Pass --yes to go ahead",
        if peers.len() == 1 { "the member".to_owned() } else { format!("the {} members", peers.len()) },
        peers.join(", ")
    )]
    WouldDropMembers {
        namespace: String,
        peers: Vec<String>,
    },
    /// `join --namespace` with neither a secret nor `--open`.
    #[error(
        "namespace {namespace} has no secret on this node: join with the invite token of a member (`devmesh invite` on theirs, then `devmesh join <token>`), or pass --secret-file; pass --open only to join it as an open namespace, without a secret"
    )]
    NoSecret { namespace: String },
    /// `join --open` with a secret.
    #[error(
        "--open joins namespace {namespace} without a secret, and a secret was given too; drop one of them"
    )]
    OpenWithSecret { namespace: String },
    /// `invite --rotate` without `--yes`.
    #[error(
        "--rotate makes a new secret for namespace {namespace}: every member must join again with the new token (none is connected now). Pass --yes to go ahead"
    )]
    RotateNeedsYes { namespace: String },
    /// A namespace name that cannot be used.
    #[error(transparent)]
    BadNamespace(Cause),
    /// A secret that cannot be read, parsed or stored.
    #[error(transparent)]
    Secret(#[from] mesh_core::namespace::SecretError),
    #[error("recording the namespace")]
    Membership(#[source] mesh_config::ConfigError),
    /// `join` without a namespace reached no peer.
    #[error(
        "{}; check the address and that the peer's devmeshd is running",
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NoPeerReached { failures: Vec<DialFailure> },
    #[error("this node runs no front door (it is a relay); routing applies to members")]
    NoFrontDoor,
    /// A version mode or retry policy that is not known.
    #[error(transparent)]
    BadPolicy(Cause),
    #[error(
        "--peer, --require, --sticky and --clear need a service: `devmesh route <service> ...`"
    )]
    NeedsService,
    #[error("{text:?} is not a peer id ({error}); `devmesh status` lists the providers' peer ids")]
    BadPeerId {
        text: String,
        error: <PeerId as FromStr>::Err,
    },
    #[error("{text:?} is not a version requirement ({error}); write it like ^2.1")]
    BadRequirement { text: String, error: semver::Error },
    /// A devmesh.toml that cannot be used; the message names the file,
    /// line and key.
    #[error(transparent)]
    Project(mesh_config::ConfigError),
    /// Services of a devmesh.toml that cannot be supervised.
    #[error(transparent)]
    ProjectSpec(#[from] mesh_up::SpecError),
    #[error(transparent)]
    Graph(#[from] mesh_up::GraphError),
    #[error(transparent)]
    Supervisor(#[from] mesh_up::SupervisorError),
    #[error(transparent)]
    Watch(#[from] mesh_up::WatchError),
    #[error("nothing of {} is up; start it with `devmesh up -d`", project.display())]
    NotUp { project: std::path::PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_says_each_cause_once() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = RequestError::BadRequest(ControlError::Protocol(json));
        let text = chain(&err);
        assert!(
            text.starts_with("bad request: unreadable answer from devmeshd: EOF"),
            "{text}"
        );
        // An error that repeats its source in its message.
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = RequestError::Secret(mesh_core::namespace::SecretError::Io {
            path: "/h/secrets/team".into(),
            source: io,
        });
        assert_eq!(chain(&err), "secret file /h/secrets/team: denied");
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = RequestError::Membership(mesh_config::ConfigError {
            path: "/h/config.toml".into(),
            line: None,
            key: None,
            message: String::new(),
            source: Some(io.into()),
        });
        assert_eq!(
            chain(&err),
            "recording the namespace: /h/config.toml: denied"
        );
    }
}
