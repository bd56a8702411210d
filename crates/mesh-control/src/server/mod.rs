//! The daemon side of the control API: the socket, one tracked task per
//! connection, and the dispatch of each request to the module that owns
//! its concern.
//!
//! - `services`: `run` and `stop`, and which held connection owns which
//!   service;
//! - `membership`: `join` and `invite` (secrets, config.toml, dials);
//! - `routing`: `route`, the front door's routing settings and preview;
//! - `status`: `status` and `peers`, views of the node's snapshot;
//! - `projects`: `up`, `ps`, `logs` and `down`, the projects whose
//!   services this daemon supervises.
//! - `connect`: `connect`, the loopback listeners of TCP services.
//! - `saved`: the joins and detached shares kept in the home and restored
//!   at start.

mod connect;
mod membership;
mod projects;
mod routing;
mod saved;
mod services;
mod status;

use std::{
    io::ErrorKind,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use membership::NewSecret;
use mesh_core::NodeHandle;
use tokio::{
    io::BufReader,
    net::{UnixListener, UnixStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, info, warn};

use crate::{Reply, Request, RequestError, read_line, write_line};

use membership::Membership;
pub use membership::{secret_path, stored_secret};

/// Facts about the daemon that the node does not know.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Address of the HTTP front door (none on a relay).
    pub proxy_addr: Option<SocketAddr>,
    /// Version of the daemon binary.
    pub daemon_version: String,
    /// The node's home: secrets are kept in `<home>/secrets/<namespace>`.
    pub home: PathBuf,
    /// The config file `join` records the namespace in.
    pub config_path: PathBuf,
    /// The front door's routing settings (none on a relay).
    pub routing: Option<Arc<mesh_proxy::policy::Routing>>,
    /// The proxy's TCP listeners (none on a relay).
    pub tcp: Option<Arc<mesh_proxy::tcp::Listeners>>,
}

/// Serves control requests for one node.
pub struct Server {
    node: NodeHandle,
    info: ServerInfo,
    shutdown: CancellationToken,
    /// Which held connection registered each service.
    owners: services::Owners,
    /// The projects `devmesh up` gave this daemon.
    projects: projects::Projects,
    /// The joins and detached shares that survive a restart.
    saved: saved::Store,
    next_conn: AtomicU64,
    /// The open control connections, drained by [`Server::serve`].
    connections: TaskTracker,
}

impl Server {
    /// A server for `node`. A `shutdown` request cancels `shutdown`; once
    /// it is cancelled, [`Server::serve`] stops accepting and drains the
    /// open connections.
    pub fn new(node: NodeHandle, info: ServerInfo, shutdown: CancellationToken) -> Arc<Self> {
        connect::restore(&info);
        let saved = saved::Store::load(&info.home);
        Arc::new(Self {
            node,
            info,
            shutdown,
            owners: services::Owners::default(),
            projects: projects::Projects::default(),
            saved,
            next_conn: AtomicU64::new(1),
            connections: TaskTracker::new(),
        })
    }

    /// Binds the control socket at `path`, owner-only. Fails when another
    /// daemon answers on it; a stale socket file is replaced.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                ErrorKind::AddrInUse,
                format!(
                    "a devmeshd is already running with control socket {}; stop it with `devmesh daemon stop` or use another DEVMESH_HOME",
                    path.display()
                ),
            ));
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Accepts control connections until the shutdown token is cancelled,
    /// then closes the listener at once (new connections are refused) and
    /// returns when every open connection has ended: each finishes the
    /// request it is handling, writes its answer and closes. Held `run`
    /// connections close too, which withdraws their services. The caller
    /// bounds the wait.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accepting a control connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let conn = self.new_owner();
            let span = tracing::debug_span!("control connection", conn);
            self.connections
                .spawn(self.clone().connection(stream, conn).instrument(span));
        }
        drop(listener);
        self.connections.close();
        debug!(
            open = self.connections.len(),
            "control socket closed; draining its connections"
        );
        self.connections.wait().await;
    }

    /// A new id for a connection or a project, which may own services.
    fn new_owner(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Answers the requests of one connection until it closes or the
    /// shutdown token is cancelled between two requests. `up` and
    /// `logs --follow` turn the connection into a stream of events.
    async fn connection(self: Arc<Self>, stream: UnixStream, conn: u64) {
        let mut stream = BufReader::new(stream);
        loop {
            let read = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                read = read_line::<Request>(&mut stream) => read,
            };
            let request = match read {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "bad control message");
                    let reply = refusal(&RequestError::BadRequest(e));
                    let _ = write_line(stream.get_mut(), &reply).await;
                    break;
                }
            };
            let request = match request {
                Request::Up(up) => {
                    self.up_stream(&mut stream, up).await;
                    break;
                }
                Request::Logs(logs) if logs.follow => {
                    self.follow_stream(&mut stream, logs).await;
                    break;
                }
                other => other,
            };
            let reply = match self.handle(request, conn).await {
                Ok(result) => accepted(result),
                Err(error) => refusal(&error),
            };
            if write_line(stream.get_mut(), &reply).await.is_err() {
                break;
            }
        }
        self.release(conn).await;
    }

    /// Withdraws the services a closed held connection registered.
    async fn release(&self, conn: u64) {
        for name in self.owners.release(conn) {
            info!(service = %name, "`devmesh run` ended; withdrawing its service");
            let _ = self.node.unregister(&name).await;
        }
    }

    async fn handle(&self, request: Request, conn: u64) -> Result<serde_json::Value, RequestError> {
        match request {
            Request::Status => answer(&self.status(Instant::now())),
            Request::Peers => answer(&self.peers()),
            Request::Run { service, hold } => answer(&self.run(service, hold, conn).await?),
            Request::Stop { name } => {
                self.stop(&name).await?;
                Ok(serde_json::json!({"stopped": name}))
            }
            Request::Join {
                addrs,
                namespace,
                secret,
                open,
            } => answer(
                &self
                    .join(addrs, namespace, Membership { secret, open })
                    .await?,
            ),
            Request::Invite {
                namespace,
                bootstrap,
                rotate,
                yes,
            } => answer(
                &self
                    .invite(namespace, bootstrap, NewSecret { rotate, yes })
                    .await?,
            ),
            Request::Route(spec) => answer(&self.route(spec)?),
            Request::Ps { project } => answer(&self.ps(&project).await?),
            Request::Logs(logs) => answer(&self.logs(&logs).await?),
            Request::Down { project } => answer(&self.down(&project).await?),
            // A stream, answered by `connection` before it gets here.
            Request::Up(_) => Err(RequestError::BadRequest(crate::ControlError::Refused(
                "`up` is answered with a stream of events".into(),
            ))),
            Request::Connect(spec) => answer(&self.connect(spec).await?),
            Request::Shutdown => {
                info!("shutdown requested over the control socket");
                self.shutdown.cancel();
                Ok(serde_json::json!({"stopping": true}))
            }
        }
    }

    /// The URL of service `name` through this node's front door (empty on
    /// a relay).
    fn url(&self, name: &str) -> String {
        status::url(self.info.proxy_addr, name)
    }
}

/// A successful answer.
fn accepted(result: serde_json::Value) -> Reply {
    Reply {
        ok: true,
        result,
        error: None,
    }
}

/// The answer that refuses a request with `error`'s whole text.
fn refusal(error: &RequestError) -> Reply {
    Reply {
        ok: false,
        result: serde_json::Value::Null,
        error: Some(crate::chain(error)),
    }
}

fn answer<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RequestError> {
    serde_json::to_value(value).map_err(RequestError::Encode)
}

mod streams;
#[cfg(test)]
mod tests;
