//! The daemon side of the control API.

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mesh_core::{
    Invite, LocalService, Multiaddr, Namespace, NodeHandle, Provider, Reachability, Reservation,
    Role, Secret, namespace::validate_name, record::ServiceRecord,
};
use tokio::{
    io::BufReader,
    net::{UnixListener, UnixStream},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use mesh_proxy::policy::{RetryPolicy, Routing, ServiceRoute, VersionMode};

use crate::{
    AdmissionFailureStatus, ConflictStatus, InviteResult, JoinResult, PeerStatus, RelayStatus,
    Reply, Request, RouteResult, RouteStatus, RunResult, ServiceSpec, ServiceStatus, Status,
    read_line, write_line,
};

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
}

/// Where the secret of `namespace` is kept in `home`.
pub fn secret_path(home: &Path, namespace: &str) -> PathBuf {
    home.join("secrets").join(namespace)
}

/// Serves control requests for one node.
pub struct Server {
    node: NodeHandle,
    info: ServerInfo,
    shutdown: CancellationToken,
    /// Which held connection registered each service.
    owners: Mutex<HashMap<String, u64>>,
    next_conn: AtomicU64,
}

impl Server {
    /// A server for `node`; a `shutdown` request cancels `shutdown`.
    pub fn new(node: NodeHandle, info: ServerInfo, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            node,
            info,
            shutdown,
            owners: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
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

    /// Accepts control connections until shutdown.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accepting a control connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let server = self.clone();
            tokio::spawn(async move { server.connection(stream).await });
        }
    }

    async fn connection(self: Arc<Self>, stream: UnixStream) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut stream = BufReader::new(stream);
        loop {
            let request: Request = match read_line(&mut stream).await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "bad control message");
                    let reply = Reply {
                        ok: false,
                        result: serde_json::Value::Null,
                        error: Some(format!("bad request: {e}")),
                    };
                    let _ = write_line(stream.get_mut(), &reply).await;
                    break;
                }
            };
            let reply = match self.handle(request, conn).await {
                Ok(result) => Reply {
                    ok: true,
                    result,
                    error: None,
                },
                Err(error) => Reply {
                    ok: false,
                    result: serde_json::Value::Null,
                    error: Some(error),
                },
            };
            if write_line(stream.get_mut(), &reply).await.is_err() {
                break;
            }
        }
        self.release(conn).await;
    }

    /// Withdraws the services a closed held connection registered.
    async fn release(&self, conn: u64) {
        let names: Vec<String> = {
            let mut owners = self.owners.lock().expect("owners lock");
            let names = owners
                .iter()
                .filter(|(_, c)| **c == conn)
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>();
            for n in &names {
                owners.remove(n);
            }
            names
        };
        for name in names {
            info!(service = %name, "`devmesh run` ended; withdrawing its service");
            let _ = self.node.unregister(&name).await;
        }
    }

    async fn handle(&self, request: Request, conn: u64) -> Result<serde_json::Value, String> {
        match request {
            Request::Status => json(&self.status()),
            Request::Peers => json(&self.peers()),
            Request::Run { service, hold } => {
                let result = self.run(service, hold, conn).await?;
                json(&result)
            }
            Request::Stop { name } => {
                self.owners.lock().expect("owners lock").remove(&name);
                match self.node.unregister(&name).await {
                    Ok(true) => Ok(serde_json::json!({"stopped": name})),
                    Ok(false) => Err(format!(
                        "service {name:?} is not provided by this node; `devmesh status` lists the services"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            Request::Join {
                addrs,
                namespace,
                secret,
            } => json(&self.join(addrs, namespace, secret).await?),
            Request::Invite {
                namespace,
                bootstrap,
            } => json(&self.invite(namespace, bootstrap).await?),
            Request::Route {
                service,
                pin,
                require,
                versions,
                sticky,
                retry,
                clear,
            } => json(&self.route(service, pin, require, versions, sticky, retry, clear)?),
            Request::Shutdown => {
                info!("shutdown requested over the control socket");
                self.shutdown.cancel();
                Ok(serde_json::json!({"stopping": true}))
            }
        }
    }

    async fn join(
        &self,
        addrs: Vec<String>,
        namespace: Option<String>,
        secret: Option<String>,
    ) -> Result<JoinResult, String> {
        let addrs: Vec<Multiaddr> = addrs
            .iter()
            .map(|a| {
                a.parse().map_err(|e| {
                    format!("{a:?} is not a multiaddr ({e}); expected one like /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...")
                })
            })
            .collect::<Result<_, _>>()?;
        if let Some(name) = &namespace {
            if self.node.snapshot().role == Role::Relay {
                return Err(
                    "this node is a relay; relays serve every namespace and join none".into(),
                );
            }
            validate_name(name).map_err(|e| e.to_string())?;
            let secret = match secret {
                Some(s) => {
                    let s = Secret::parse(&s).map_err(|e| e.to_string())?;
                    s.save(&secret_path(&self.info.home, name))
                        .map_err(|e| e.to_string())?;
                    Some(s)
                }
                None => self.stored_secret(name)?,
            };
            let addr_text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            mesh_config::write_membership(&self.info.config_path, name, &addr_text)
                .map_err(|e| format!("recording the namespace: {e}"))?;
            info!(namespace = %name, secret = secret.is_some(), "joining namespace on request");
            self.node
                .join(Namespace::new(name.clone(), secret.as_ref()), addrs.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut peers = Vec::new();
        let mut unreachable = Vec::new();
        // Addresses of one peer are dialled together, the first that works wins.
        let dials = mesh_core::group_by_peer(&addrs).into_iter().map(|group| {
            let node = self.node.clone();
            async move {
                let label = group
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ");
                let result =
                    tokio::time::timeout(Duration::from_secs(20), node.dial_any(group)).await;
                (label, result)
            }
        });
        for (addr, result) in futures::future::join_all(dials).await {
            match result {
                Ok(Ok(peer)) => peers.push(peer.to_string()),
                Ok(Err(e)) => unreachable.push(format!("{addr}: {e}")),
                Err(_) => unreachable.push(format!("{addr}: no connection within 20 s")),
            }
        }
        if namespace.is_none() && peers.is_empty() {
            return Err(format!(
                "{}; check the address and that the peer's devmeshd is running",
                unreachable.join("; ")
            ));
        }
        Ok(JoinResult {
            namespace: self.node.snapshot().namespace.clone(),
            peers,
            unreachable,
        })
    }

    /// The stored secret of `namespace`, if there is one.
    fn stored_secret(&self, namespace: &str) -> Result<Option<Secret>, String> {
        let path = secret_path(&self.info.home, namespace);
        if !path.exists() {
            return Ok(None);
        }
        Secret::load(&path).map(Some).map_err(|e| e.to_string())
    }

    async fn invite(
        &self,
        namespace: Option<String>,
        bootstrap: Vec<String>,
    ) -> Result<InviteResult, String> {
        let snapshot = self.node.snapshot();
        let relay = snapshot.role == Role::Relay;
        let name = match namespace {
            Some(n) => n,
            None if relay => {
                return Err(
                    "a relay is in no namespace: pass --namespace <name> for the team's namespace"
                        .into(),
                );
            }
            None => snapshot.namespace.clone(),
        };
        validate_name(&name).map_err(|e| e.to_string())?;
        let (secret, created) = match self.stored_secret(&name)? {
            Some(s) => (s, false),
            None => {
                let s = Secret::generate();
                s.save(&secret_path(&self.info.home, &name))
                    .map_err(|e| e.to_string())?;
                info!(namespace = %name, "created a secret for the namespace");
                (s, true)
            }
        };
        let mut addrs: Vec<Multiaddr> = bootstrap
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| format!("bootstrap address {a:?} is not a multiaddr: {e}"))
            })
            .collect::<Result<_, _>>()?;
        if addrs.is_empty() {
            addrs = if relay {
                snapshot
                    .external_addrs
                    .iter()
                    .map(|a| {
                        a.clone()
                            .with(mesh_core::multiaddr::Protocol::P2p(snapshot.local_peer))
                    })
                    .collect()
            } else {
                snapshot.bootstrap.clone()
            };
        }
        // A member moves into the invited namespace (with its secret) so it
        // admits the people it invites.
        let joined = !relay && (snapshot.namespace != name || !snapshot.has_secret || created);
        // The inviter meets its invitees where it sends them.
        let new: Vec<Multiaddr> = if relay {
            Vec::new()
        } else {
            addrs
                .iter()
                .filter(|a| !snapshot.bootstrap.contains(a))
                .cloned()
                .collect()
        };
        if joined || !new.is_empty() {
            let text: Vec<String> = new.iter().map(ToString::to_string).collect();
            mesh_config::write_membership(&self.info.config_path, &name, &text)
                .map_err(|e| format!("recording the namespace: {e}"))?;
        }
        if joined {
            self.node
                .join(Namespace::new(name.clone(), Some(&secret)), Vec::new())
                .await
                .map_err(|e| e.to_string())?;
        }
        if !new.is_empty() {
            self.node
                .add_bootstrap(new)
                .await
                .map_err(|e| e.to_string())?;
        }
        let invite = Invite {
            namespace: name.clone(),
            secret: Some(secret),
            bootstrap: addrs.clone(),
        };
        Ok(InviteResult {
            token: invite.encode(),
            namespace: name,
            bootstrap: addrs.iter().map(ToString::to_string).collect(),
            created_secret: created,
            joined,
        })
    }

    async fn run(&self, spec: ServiceSpec, hold: bool, conn: u64) -> Result<RunResult, String> {
        mesh_core::record::validate_service_name(&spec.name).map_err(|e| e.to_string())?;
        let version = semver::Version::parse(&spec.version).map_err(|e| {
            format!(
                "invalid version {:?} for service {}: {e}; use a semantic version such as 1.4.2",
                spec.version, spec.name
            )
        })?;
        if spec.port == 0 {
            return Err(format!(
                "service {}: port 0 is not a backend port; pass --port <port>",
                spec.name
            ));
        }
        for (service, req) in &spec.requires {
            mesh_core::record::validate_service_name(service).map_err(|e| e.to_string())?;
            semver::VersionReq::parse(req).map_err(|e| {
                format!(
                    "service {}: {req:?} is not a version requirement on {service} ({e}); write it like ^2.1",
                    spec.name
                )
            })?;
        }
        let health = spec
            .health
            .as_ref()
            .map(|h| h.to_check())
            .transpose()
            .map_err(|e| {
                format!(
                    "service {}: health check `{}`: {e}",
                    spec.name,
                    e.setting.config_key()
                )
            })?;
        let mut record = ServiceRecord::http(&spec.name, version.clone());
        record.routes = spec.routes;
        record.tags = spec.tags;
        record.requires = spec.requires;
        record.h2 = spec.h2;
        self.node
            .register(LocalService {
                record,
                port: spec.port,
                health,
                scheme: spec.scheme,
            })
            .await
            .map_err(|e| e.to_string())?;
        {
            let mut owners = self.owners.lock().expect("owners lock");
            if hold {
                owners.insert(spec.name.clone(), conn);
            } else {
                owners.remove(&spec.name);
            }
        }
        Ok(RunResult {
            url: self.url(&spec.name),
            name: spec.name,
            version: version.to_string(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        service: Option<String>,
        pin: Option<String>,
        require: Option<String>,
        versions: Option<String>,
        sticky: Option<bool>,
        retry: Option<String>,
        clear: bool,
    ) -> Result<RouteResult, String> {
        let routing =
            self.info.routing.as_ref().ok_or(
                "this node runs no front door (it is a relay); routing applies to members",
            )?;
        let versions: Option<VersionMode> = versions.map(|v| v.parse()).transpose()?;
        let retry: Option<RetryPolicy> = retry.map(|r| r.parse()).transpose()?;
        match service {
            None => {
                if pin.is_some() || require.is_some() || sticky.is_some() || clear {
                    return Err(
                        "--peer, --require, --sticky and --clear need a service: `devmesh route <service> ...`"
                            .into(),
                    );
                }
                if versions.is_some() || retry.is_some() {
                    let d = routing.set_defaults(|d| {
                        if let Some(v) = versions {
                            d.versions = v;
                        }
                        if let Some(r) = retry {
                            d.retry = r;
                        }
                    });
                    info!(versions = %d.versions, retry = %d.retry, "routing defaults changed");
                }
            }
            Some(service) => {
                mesh_core::record::validate_service_name(&service).map_err(|e| e.to_string())?;
                let pin: Option<mesh_core::PeerId> = pin
                    .map(|p| {
                        p.parse().map_err(|e| {
                            format!("{p:?} is not a peer id ({e}); `devmesh status` lists the providers' peer ids")
                        })
                    })
                    .transpose()?;
                let require: Option<semver::VersionReq> = require
                    .map(|r| {
                        semver::VersionReq::parse(&r).map_err(|e| {
                            format!("{r:?} is not a version requirement ({e}); write it like ^2.1")
                        })
                    })
                    .transpose()?;
                let route = routing.update(&service, |s| {
                    if clear {
                        *s = ServiceRoute::default();
                    }
                    if pin.is_some() {
                        s.pin = pin;
                    }
                    if require.is_some() {
                        s.require = require;
                    }
                    if versions.is_some() {
                        s.versions = versions;
                    }
                    if let Some(sticky) = sticky {
                        s.sticky = sticky;
                    }
                    if retry.is_some() {
                        s.retry = retry;
                    }
                });
                info!(%service, ?route, "routing of service changed");
            }
        }
        Ok(self.routes(routing))
    }

    /// Where requests for each service go now.
    fn routes(&self, routing: &Routing) -> RouteResult {
        let snapshot = self.node.snapshot();
        let table = routing.table();
        let now = Instant::now();
        let ejected = routing.ejected(now);
        let mut names: Vec<String> = snapshot
            .service_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.extend(table.services.keys().cloned());
        names.sort();
        names.dedup();
        let services = names
            .into_iter()
            .map(|service| {
                let settings = table.service(&service);
                let requirements =
                    mesh_proxy::choose::node_requirements(&snapshot, &service, settings);
                let mode = settings
                    .and_then(|s| s.versions)
                    .unwrap_or(table.defaults.versions);
                let ask = mesh_proxy::choose::Ask {
                    requirements: &requirements,
                    mode,
                    pin: settings.and_then(|s| s.pin),
                    sticky: None,
                };
                let (order, refusal) =
                    match mesh_proxy::choose::choose(&snapshot, &service, &ask, routing, now) {
                        Ok(choice) => (
                            choice
                                .candidates
                                .iter()
                                .map(|c| {
                                    format!(
                                        "{service}@{} on {} ({}{})",
                                        c.version,
                                        c.provider,
                                        c.target.route(),
                                        if c.satisfies {
                                            ""
                                        } else {
                                            ", version does not satisfy"
                                        }
                                    )
                                })
                                .collect(),
                            None,
                        ),
                        Err(refusal) => (Vec::new(), Some(refusal.describe(&service))),
                    };
                RouteStatus {
                    pin: settings.and_then(|s| s.pin).map(|p| p.to_string()),
                    requirements: requirements
                        .iter()
                        .map(|r| format!("{} ({})", r.req, r.source))
                        .collect(),
                    versions: mode.to_string(),
                    sticky: settings.is_some_and(|s| s.sticky),
                    retry: settings
                        .and_then(|s| s.retry)
                        .unwrap_or(table.defaults.retry)
                        .to_string(),
                    order,
                    refusal,
                    ejected: ejected
                        .iter()
                        .filter(|e| e.service == service)
                        .map(|e| {
                            format!(
                                "{} for {} ms more after {} failure(s)",
                                e.provider,
                                e.remaining.as_millis(),
                                e.failures
                            )
                        })
                        .collect(),
                    service,
                }
            })
            .collect();
        RouteResult {
            versions: table.defaults.versions.to_string(),
            retry: table.defaults.retry.to_string(),
            services,
        }
    }

    /// Requirements across the mesh that no provider satisfies: the
    /// `requires` of every service every node announces, and this node's
    /// `devmesh route --require` settings.
    fn conflicts(&self, snapshot: &mesh_core::Snapshot) -> Vec<ConflictStatus> {
        let mut asks: Vec<(String, String, String)> = Vec::new();
        for p in snapshot
            .service_names()
            .into_iter()
            .flat_map(|name| snapshot.providers(name))
        {
            let peer = match p {
                Provider::Local(_) => snapshot.local_peer,
                Provider::Remote(r) => r.peer,
            };
            let record = p.record();
            for (service, req) in &record.requires {
                asks.push((
                    format!("{}@{} on {peer}", record.name, record.version),
                    service.clone(),
                    req.clone(),
                ));
            }
        }
        if let Some(routing) = &self.info.routing {
            for (service, settings) in &routing.table().services {
                if let Some(req) = &settings.require {
                    asks.push((
                        "devmesh route on this node".into(),
                        service.clone(),
                        req.to_string(),
                    ));
                }
            }
        }
        asks.into_iter()
            .filter_map(|(consumer, service, requirement)| {
                let req = semver::VersionReq::parse(&requirement).ok()?;
                let providers = snapshot.providers(&service);
                if providers.iter().any(|p| req.matches(&p.record().version)) {
                    return None;
                }
                let available = providers
                    .iter()
                    .map(|p| {
                        let peer = match p {
                            Provider::Local(_) => snapshot.local_peer,
                            Provider::Remote(r) => r.peer,
                        };
                        format!("{service}@{} on {peer}", p.record().version)
                    })
                    .collect();
                Some(ConflictStatus {
                    consumer,
                    service,
                    requirement,
                    available,
                })
            })
            .collect()
    }

    fn url(&self, name: &str) -> String {
        match self.info.proxy_addr {
            Some(addr) => format!("http://{name}.localhost:{}/", addr.port()),
            None => String::new(),
        }
    }

    fn status(&self) -> Status {
        let snapshot = self.node.snapshot();
        let now = Instant::now();
        let mut services = Vec::new();
        for name in snapshot.service_names() {
            for p in snapshot.providers(name) {
                let record = p.record();
                let scheme = match p {
                    Provider::Local(l) => Some(l.scheme.to_string()),
                    Provider::Remote(_) => None,
                };
                let (provider, route, connection, port, expires) = match p {
                    Provider::Local(l) => (snapshot.local_peer, "local", None, Some(l.port), None),
                    Provider::Remote(r) => {
                        let connection = match snapshot.peers.get(&r.peer) {
                            Some(link) if link.direct => "direct",
                            Some(_) => "relayed",
                            None => "not-connected",
                        };
                        let expires = r.expires.saturating_duration_since(now).as_millis() as u64;
                        (
                            r.peer,
                            "remote",
                            Some(connection.to_owned()),
                            None,
                            Some(expires),
                        )
                    }
                };
                services.push(ServiceStatus {
                    name: name.to_owned(),
                    version: record.version.to_string(),
                    provider: provider.to_string(),
                    route: route.to_owned(),
                    h2: record.h2,
                    scheme,
                    connection,
                    port,
                    protocol: record.protocol.to_string(),
                    health: record.health.to_string(),
                    health_failure: match p {
                        Provider::Local(_) => snapshot.health_failures.get(name).cloned(),
                        Provider::Remote(_) => None,
                    },
                    expires_in_ms: expires,
                    url: self.url(name),
                });
            }
        }
        let with_id = |a: &Multiaddr| format!("{a}/p2p/{}", snapshot.local_peer);
        Status {
            peer_id: snapshot.local_peer.to_string(),
            role: match snapshot.role {
                Role::Member => "member",
                Role::Relay => "relay",
            }
            .to_owned(),
            namespace: snapshot.namespace.clone(),
            has_secret: snapshot.has_secret,
            listen_addrs: snapshot.listen_addrs.iter().map(with_id).collect(),
            external_addrs: snapshot
                .external_addrs
                .iter()
                .filter(|a| !mesh_core::is_relayed(a))
                .map(with_id)
                .collect(),
            observed_addrs: snapshot
                .observed_addrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            reachability: match snapshot.reachability {
                Reachability::Unknown => "unknown",
                Reachability::Public => "public",
                Reachability::Private => "private",
            }
            .to_owned(),
            relays: snapshot
                .relays
                .iter()
                .map(|r| {
                    let (reservation, error) = match &r.reservation {
                        Reservation::Pending => ("pending", None),
                        Reservation::Accepted => ("accepted", None),
                        Reservation::Failed(e) => ("failed", Some(e.clone())),
                    };
                    RelayStatus {
                        peer_id: r.peer.to_string(),
                        address: format!("{}/p2p/{}", r.addr, r.peer),
                        reservation: reservation.to_owned(),
                        error,
                    }
                })
                .collect(),
            bootstrap: snapshot.bootstrap.iter().map(ToString::to_string).collect(),
            admission_failures: snapshot
                .admission_failures
                .iter()
                .map(|f| AdmissionFailureStatus {
                    peer_id: f.peer.to_string(),
                    reason: f.reason.clone(),
                })
                .collect(),
            proxy_addr: self.info.proxy_addr.map(|a| a.to_string()),
            daemon_version: self.info.daemon_version.clone(),
            conflicts: self.conflicts(&snapshot),
            services,
        }
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let snapshot = self.node.snapshot();
        snapshot
            .peers
            .iter()
            .map(|(peer, link)| PeerStatus {
                peer_id: peer.to_string(),
                addresses: link.addrs.iter().map(ToString::to_string).collect(),
                connection: if link.direct { "direct" } else { "relayed" }.to_owned(),
                kind: link.kind.to_string(),
                rtt_ms: link.rtt.map(|d| d.as_secs_f64() * 1000.0),
                agent: link.agent.clone(),
                services: snapshot
                    .remote
                    .iter()
                    .filter(|r| r.peer == *peer)
                    .map(|r| format!("{}@{}", r.record.name, r.record.version))
                    .collect(),
            })
            .collect()
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("encoding the answer: {e}"))
}
