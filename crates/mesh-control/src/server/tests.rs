//! Tests of the server: the drain on shutdown with a real node, and the
//! pure parts of each request against a snapshot made by hand.

use std::time::Instant;

use mesh_core::{
    LocalService, PeerId, RemoteService, Role, Snapshot,
    record::{Health, ServiceRecord},
};
use tokio::time::{Duration, timeout};

use super::*;
use crate::{Client, ControlError, ServiceSpec};

/// An empty snapshot of a member in namespace `team`.
pub(super) fn snapshot() -> Snapshot {
    Snapshot {
        namespace: "team".into(),
        ..Snapshot::empty(PeerId::random(), Role::Member)
    }
}

/// A record of `name` at `version` requiring `requires` (`service=req`).
pub(super) fn record(name: &str, version: &str, requires: &[(&str, &str)]) -> ServiceRecord {
    let mut r = ServiceRecord::http(name, version.parse().unwrap());
    r.health = Health::Healthy;
    r.requires = requires
        .iter()
        .map(|(s, q)| ((*s).to_owned(), (*q).to_owned()))
        .collect();
    r
}

/// Adds a remote provider of `record` and returns its peer.
pub(super) fn remote(s: &mut Snapshot, record: ServiceRecord) -> PeerId {
    let peer = PeerId::random();
    s.remote.push(RemoteService {
        peer,
        record,
        expires: Instant::now() + Duration::from_secs(10),
    });
    peer
}

struct Running {
    server: Arc<Server>,
    node: NodeHandle,
    socket: PathBuf,
    shutdown: CancellationToken,
    serving: tokio::task::JoinHandle<()>,
    _home: tempfile::TempDir,
}

/// A server for a real node on loopback, serving on a socket in a temp
/// home.
async fn running() -> Running {
    running_with(None).await
}

/// [`running`] with the proxy's TCP listeners `tcp`.
async fn running_with(tcp: Option<Arc<mesh_proxy::tcp::Listeners>>) -> Running {
    let home = tempfile::tempdir().unwrap();
    let keypair = mesh_core::identity::load_or_create(&home.path().join("identity.key")).unwrap();
    let mut config = mesh_core::Config::new(keypair, mesh_core::Namespace::new("team", None));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    let (node, _task) = mesh_core::Node::spawn(config).unwrap();
    let shutdown = CancellationToken::new();
    let info = ServerInfo {
        proxy_addr: Some("127.0.0.1:7700".parse().unwrap()),
        daemon_version: "test".into(),
        home: home.path().to_owned(),
        config_path: home.path().join("config.toml"),
        routing: None,
        tcp,
    };
    let server = Server::new(node.clone(), info, shutdown.clone());
    let socket = home.path().join(crate::SOCKET_NAME);
    let listener = Server::bind(&socket).unwrap();
    let serving = tokio::spawn(server.clone().serve(listener));
    Running {
        server,
        node,
        socket,
        shutdown,
        serving,
        _home: home,
    }
}

fn run_request(name: &str, hold: bool) -> Request {
    Request::Run {
        service: ServiceSpec {
            name: name.into(),
            port: 3000,
            version: "1.0.0".into(),
            routes: vec![],
            tags: vec![],
            requires: Default::default(),
            health: None,
            h2: false,
            scheme: mesh_core::Scheme::Http,
            protocol: Default::default(),
        },
        hold,
    }
}

#[tokio::test]
async fn cancel_closes_idle_and_held_connections_and_serve_returns() {
    let r = running().await;
    let mut held = Client::connect(&r.socket).await.unwrap();
    held.call(&run_request("api", true)).await.unwrap();
    let mut idle = Client::connect(&r.socket).await.unwrap();
    idle.call(&Request::Peers).await.unwrap();
    assert!(r.node.snapshot().local.contains_key("api"));

    r.shutdown.cancel();
    timeout(Duration::from_secs(5), r.serving)
        .await
        .expect("serve returns once every connection ended")
        .unwrap();
    // Both connections were blocked reading their next request.
    timeout(Duration::from_secs(1), held.closed())
        .await
        .unwrap();
    timeout(Duration::from_secs(1), idle.closed())
        .await
        .unwrap();
    assert!(
        !r.node.snapshot().local.contains_key("api"),
        "closing the held connection withdrew its service"
    );
    assert!(r.server.connections.is_empty());
    assert!(
        Client::connect(&r.socket).await.is_err(),
        "no connection is accepted after the cancel"
    );
}

#[tokio::test]
async fn a_shutdown_request_is_answered_before_its_connection_closes() {
    let r = running().await;
    let mut client = Client::connect(&r.socket).await.unwrap();
    client.call(&run_request("web", false)).await.unwrap();
    let answer = client.call(&Request::Shutdown).await.unwrap();
    assert_eq!(answer, serde_json::json!({"stopping": true}));
    assert!(r.shutdown.is_cancelled());
    timeout(Duration::from_secs(1), client.closed())
        .await
        .unwrap();
    timeout(Duration::from_secs(5), r.serving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        r.node.snapshot().local.contains_key("web"),
        "a service run without hold outlives its connection"
    );
}

#[tokio::test]
async fn refusals_carry_the_error_text() {
    let r = running().await;
    let mut client = Client::connect(&r.socket).await.unwrap();
    let err = client
        .call(&Request::Stop { name: "api".into() })
        .await
        .unwrap_err();
    let ControlError::Refused(text) = err else {
        panic!("not a refusal: {err:?}")
    };
    assert_eq!(
        text,
        "service \"api\" is not provided by this node; `devmesh status` lists the services"
    );
    let err = client
        .call(&Request::Route(crate::RouteSpec::default()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "this node runs no front door (it is a relay); routing applies to members"
    );
    let err = client
        .call(&Request::Join {
            addrs: vec!["nonsense".into()],
            namespace: None,
            secret: None,
            open: false,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("\"nonsense\" is not a multiaddr ("),
        "{err}"
    );
    r.shutdown.cancel();
}

#[test]
fn status_lists_every_provider_and_the_unmet_requirements() {
    let mut s = snapshot();
    s.local.insert(
        "web".into(),
        LocalService {
            record: record("web", "1.0.0", &[("api", "^2")]),
            port: 3000,
            health: None,
            scheme: mesh_core::Scheme::Http,
        },
    );
    let api = remote(&mut s, record("api", "1.4.2", &[]));
    let info = ServerInfo {
        proxy_addr: Some("127.0.0.1:7700".parse().unwrap()),
        daemon_version: "test".into(),
        home: PathBuf::from("/h"),
        config_path: PathBuf::from("/h/config.toml"),
        routing: None,
        tcp: None,
    };
    let conflicts = status::conflicts(&s, None);
    let me = s.local_peer;
    assert_eq!(
        conflicts,
        [crate::ConflictStatus {
            consumer: format!("web@1.0.0 on {me}"),
            service: "api".into(),
            requirement: "^2".into(),
            available: vec![format!("api@1.4.2 on {api}")],
        }]
    );
    let status = status::status(&s, &info, conflicts, Instant::now());
    let rows: Vec<(&str, &str, Option<&str>, Option<u16>)> = status
        .services
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.route.as_str(),
                v.connection.as_deref(),
                v.port,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("api", "remote", Some("not-connected"), None),
            ("web", "local", None, Some(3000)),
        ]
    );
    assert_eq!(status.services[1].url, "http://web.localhost:7700/");
    assert_eq!(status.services[0].provider, api.to_string());
    assert!(status.services[0].expires_in_ms.unwrap() > 9_000);
    // Once a provider satisfies the requirement, there is no conflict.
    remote(&mut s, record("api", "2.0.1", &[]));
    assert!(status::conflicts(&s, None).is_empty());
}

#[test]
fn a_relay_status_has_no_url() {
    assert_eq!(status::url(None, "api"), "");
}

#[tokio::test]
async fn connect_settings_survive_a_restart_and_bad_files_are_ignored() {
    let listeners = Arc::new(mesh_proxy::tcp::Listeners::default());
    let r = running_with(Some(listeners.clone())).await;
    let spec = crate::ConnectSpec {
        service: "ghost".into(),
        port: Some(15999),
        remove: false,
    };
    let state = r.server.connect(spec).await.unwrap();
    assert_eq!(state.configured_port, Some(15999));
    // No proxy runs here: nothing listens, and the status says why.
    assert_eq!(state.listen, None);
    let err = r
        .server
        .connect(crate::ConnectSpec {
            service: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pass --port"), "{err}");

    // A new daemon in the same home gets the setting back.
    let home = r.server.info.home.clone();
    let info = |tcp| ServerInfo {
        proxy_addr: None,
        daemon_version: "test".into(),
        home: home.clone(),
        config_path: home.join("config.toml"),
        routing: None,
        tcp: Some(tcp),
    };
    let again = Arc::new(mesh_proxy::tcp::Listeners::default());
    super::connect::restore(&info(again.clone()));
    assert_eq!(again.configured().0["ghost"], Some(15999));
    std::fs::write(home.join("tcp-connects.json"), "{not json").unwrap();
    let fresh = Arc::new(mesh_proxy::tcp::Listeners::default());
    super::connect::restore(&info(fresh.clone()));
    assert!(fresh.configured().0.is_empty());
    r.shutdown.cancel();
}
