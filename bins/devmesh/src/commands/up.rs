//! `devmesh up`: runs the services of the nearest devmesh.toml in the
//! foreground with a [`mesh_up::Supervisor`], shares each one with the
//! daemon once it is ready (over its own held control connection, like
//! `devmesh run`) and takes a dependency from a teammate when the daemon
//! lists a healthy remote provider in a satisfying version.

use std::{
    collections::BTreeMap,
    fmt::Display,
    io::IsTerminal as _,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use futures::future::BoxFuture;
use mesh_config::Project;
use mesh_control::{Client, Request, RunResult, Status};
use mesh_core::{Scheme, health::HealthCheck};
use mesh_up::{Event, HealthProbe, LogLine, Options, ProjectSpec, Resolver, Selection, Supervisor};
use semver::{Version, VersionReq};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::broadcast::{Receiver, error::RecvError},
};

use crate::{
    Failure,
    cli::{RunArgs, UpArgs},
    commands::run::spec_from,
    daemon,
};

/// Time between two reads of the daemon's status, to follow what the mesh
/// provides.
const MESH_POLL: Duration = Duration::from_secs(1);

/// Colours of the `name | ` prefixes (ANSI foreground codes), one per
/// service in name order, round robin.
const PALETTE: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// `devmesh up`: runs until Ctrl-C or SIGTERM (exit 0) or until a service
/// fails (exit 1 with its reason), then stops every service.
pub async fn up(home: &Path, args: UpArgs) -> Result<(), Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let path = Project::find(&cwd).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "no devmesh.toml in {} or any parent directory",
            cwd.display()
        ))
    })?;
    let project = Project::load(&path)?;
    let spec = ProjectSpec::from_project(&project).map_err(Failure::usage)?;
    let mut status = daemon::connect_or_start(home).await?;
    let mesh = Arc::new(Mesh::default());
    mesh.update(&status.call_as(&Request::Status).await?);
    let printer = Printer::new(spec.services.keys(), colour());
    let options = Options {
        selection: Selection {
            services: args.services,
            local: args.local,
        },
        probe: Some(Arc::new(Loopback::new(&project))),
        resolver: mesh.clone(),
    };
    let supervisor = Supervisor::spawn(spec, options).map_err(Failure::usage)?;
    let mut session = Session {
        home,
        logs: supervisor.follow(),
        project,
        supervisor,
        shares: BTreeMap::new(),
        printer,
    };
    let outcome = session.watch(&mut status, &mesh).await;
    session.shutdown().await;
    outcome
}

/// Whether the prefixes are coloured: stdout is a terminal and `NO_COLOR`
/// is unset or empty.
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One run of `devmesh up`.
struct Session<'a> {
    home: &'a Path,
    project: Project,
    supervisor: Supervisor,
    logs: Receiver<LogLine>,
    /// The held control connection of each shared service; closing it
    /// withdraws the service.
    shares: BTreeMap<String, Client>,
    printer: Printer,
}

impl Session<'_> {
    /// Starts the services and prints their output and events until a
    /// signal (`Ok`) or a failure.
    async fn watch(&mut self, status: &mut Client, mesh: &Mesh) -> Result<(), Failure> {
        let mut events = self.supervisor.subscribe();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        self.supervisor.start().await?;
        let mut poll = tokio::time::interval(MESH_POLL);
        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
                line = self.logs.recv() => match line {
                    Ok(line) => self.printer.line(&line),
                    Err(RecvError::Lagged(n)) => self.printer.note(format_args!("{n} lines of output skipped")),
                    Err(RecvError::Closed) => return Ok(()),
                },
                event = events.recv() => match event {
                    Ok(event) => self.on_event(event).await?,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = poll.tick() => {
                    let now: Status = status.call_as(&Request::Status).await.context(
                        "devmeshd stopped; the services of devmesh.toml are no longer shared",
                    )?;
                    if mesh.update(&now) {
                        self.supervisor.mesh_changed().await?;
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Ready {
                service,
                port: Some(port),
            } => match self.share(&service).await {
                Ok(()) => self
                    .printer
                    .note(format_args!("{service} ready on :{port} (shared)")),
                Err(e) => self.printer.note(format_args!(
                    "{service} ready on :{port} (not shared: {})",
                    mesh_core::error::Chain(e.error.as_ref())
                )),
            },
            Event::Ready {
                service,
                port: None,
            } => self
                .printer
                .note(format_args!("{service} ready (not shared)")),
            Event::Withdrawn { service } => self.withdraw(&service).await,
            Event::Remote { service, provider } => self
                .printer
                .note(format_args!("{service} from {provider} (mesh)")),
            Event::Restarting {
                service,
                exit,
                delay,
            } => self.printer.note(format_args!(
                "{service} exited with {exit}; restarting in {delay:.1?}"
            )),
            Event::Failed { service, failure } => {
                return Err(Failure::failed(anyhow::anyhow!(
                    "{service} failed: {}",
                    failure.reason()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// Registers `service` with the daemon over a connection of its own,
    /// held until [`Session::withdraw`].
    async fn share(&mut self, service: &str) -> Result<(), Failure> {
        let config = self
            .project
            .services
            .get(service)
            .with_context(|| format!("{service} is not in devmesh.toml"))?;
        let args = RunArgs {
            name: service.to_owned(),
            ..RunArgs::default()
        };
        let spec = spec_from(args, Some(config))?;
        let mut client = daemon::connect(self.home).await?;
        let _: RunResult = client
            .call_as(&Request::Run {
                service: spec,
                hold: true,
            })
            .await?;
        self.shares.insert(service.to_owned(), client);
        Ok(())
    }

    /// Withdraws `service` from the mesh when it is shared; stops it
    /// explicitly so that the withdrawal is done when this returns.
    async fn withdraw(&mut self, service: &str) {
        if let Some(mut client) = self.shares.remove(service) {
            let _ = client
                .call(&Request::Stop {
                    name: service.to_owned(),
                })
                .await;
        }
    }

    /// Withdraws every share, then stops every service (dependents first)
    /// and prints the last lines they wrote.
    async fn shutdown(&mut self) {
        let shared: Vec<String> = self.shares.keys().cloned().collect();
        for service in shared {
            self.withdraw(&service).await;
        }
        if let Err(e) = self.supervisor.stop_all().await {
            self.printer
                .note(format_args!("stopping the services: {e}"));
        }
        while let Ok(line) = self.logs.try_recv() {
            self.printer.line(&line);
        }
        self.printer.note("stopped");
    }
}

/// Prints the one output stream of `devmesh up`.
struct Printer {
    width: usize,
    colours: Option<BTreeMap<String, u8>>,
}

impl Printer {
    fn new<'a>(names: impl Iterator<Item = &'a String>, colour: bool) -> Self {
        let names: Vec<&String> = names.collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let colours = colour.then(|| {
            names
                .iter()
                .zip(PALETTE.iter().cycle())
                .map(|(name, &c)| ((*name).clone(), c))
                .collect()
        });
        Self { width, colours }
    }

    fn line(&self, line: &LogLine) {
        let colour = self
            .colours
            .as_ref()
            .and_then(|c| c.get(&line.service).copied());
        println!("{}{}", prefix(&line.service, self.width, colour), line.line);
    }

    fn note(&self, text: impl Display) {
        println!("devmesh: {text}");
    }
}

/// `name | ` padded to `width` characters of name, in `colour` when given.
fn prefix(name: &str, width: usize, colour: Option<u8>) -> String {
    let padded = format!("{name:<width$} | ");
    match colour {
        Some(c) => format!("\x1b[{c}m{padded}\x1b[0m"),
        None => padded,
    }
}

/// A service a teammate's node provides healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Offer {
    service: String,
    version: Version,
    peer: String,
}

/// What the mesh provides, as the daemon's status said it last; the
/// supervisor's [`Resolver`].
#[derive(Debug, Default)]
struct Mesh {
    offers: Mutex<Vec<Offer>>,
}

impl Mesh {
    /// Takes the offers of `status`; `true` when they changed.
    fn update(&self, status: &Status) -> bool {
        let offers = offers(status);
        let mut held = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        if *held == offers {
            return false;
        }
        *held = offers;
        true
    }
}

impl Resolver for Mesh {
    fn provider_for(&self, service: &str, requirement: &VersionReq) -> Option<String> {
        let offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        offers
            .iter()
            .filter(|o| o.service == service && requirement.matches(&o.version))
            .max_by(|a, b| a.version.cmp(&b.version).then(b.peer.cmp(&a.peer)))
            .map(|o| o.peer.clone())
    }
}

/// The healthy services of other nodes in `status`, in a stable order.
fn offers(status: &Status) -> Vec<Offer> {
    let mut offers: Vec<Offer> = status
        .services
        .iter()
        .filter(|s| s.provider != status.peer_id && s.health == "healthy")
        .filter_map(|s| {
            Some(Offer {
                service: s.name.clone(),
                version: Version::parse(&s.version).ok()?,
                peer: s.provider.clone(),
            })
        })
        .collect();
    offers.sort_by(|a, b| (&a.service, &a.peer).cmp(&(&b.service, &b.peer)));
    offers
}

/// Health checks of the services `up` starts: the daemon's own probe
/// (`mesh_proxy::health::probe`), with each service's scheme.
struct Loopback {
    schemes: BTreeMap<String, Scheme>,
}

impl Loopback {
    fn new(project: &Project) -> Self {
        let schemes = project
            .services
            .iter()
            .map(|(name, service)| {
                let scheme = service.scheme().parse().unwrap_or(Scheme::Http);
                (name.clone(), scheme)
            })
            .collect();
        Loopback { schemes }
    }
}

impl HealthProbe for Loopback {
    fn check<'a>(
        &'a self,
        service: &'a str,
        port: u16,
        check: &'a HealthCheck,
    ) -> BoxFuture<'a, bool> {
        let scheme = self.schemes.get(service).copied().unwrap_or(Scheme::Http);
        Box::pin(async move {
            mesh_proxy::health::probe(port, scheme, &check.probe)
                .await
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, version: &str, provider: &str, health: &str) -> mesh_control::ServiceStatus {
        mesh_control::ServiceStatus {
            name: name.into(),
            version: version.into(),
            provider: provider.into(),
            route: String::new(),
            h2: false,
            scheme: None,
            connection: None,
            port: None,
            protocol: "http".into(),
            health: health.into(),
            health_failure: None,
            expires_in_ms: None,
            url: String::new(),
            listen: None,
        }
    }

    fn status(services: Vec<mesh_control::ServiceStatus>) -> Status {
        Status {
            peer_id: "me".into(),
            role: String::new(),
            namespace: String::new(),
            has_secret: false,
            listen_addrs: vec![],
            external_addrs: vec![],
            observed_addrs: vec![],
            reachability: String::new(),
            relays: vec![],
            bootstrap: vec![],
            admission_failures: vec![],
            proxy_addr: None,
            daemon_version: String::new(),
            services,
            conflicts: vec![],
            listeners: vec![],
        }
    }

    #[test]
    fn only_healthy_remote_providers_in_a_satisfying_version_resolve() {
        let mesh = Mesh::default();
        let now = status(vec![
            row("db", "1.2.0", "peer-a", "healthy"),
            row("db", "1.5.0", "peer-b", "healthy"),
            row("db", "9.0.0", "me", "healthy"),
            row("cache", "1.0.0", "peer-a", "unhealthy"),
            row("queue", "1.0.0", "peer-a", "unknown"),
        ]);
        assert!(mesh.update(&now));
        assert!(!mesh.update(&now), "the same status is no change");
        let req = |r: &str| VersionReq::parse(r).unwrap();
        assert_eq!(
            mesh.provider_for("db", &req("^1.2")).as_deref(),
            Some("peer-b")
        );
        assert_eq!(
            mesh.provider_for("db", &req("~1.2")).as_deref(),
            Some("peer-a")
        );
        assert_eq!(mesh.provider_for("db", &req("^9")), None, "never this node");
        assert_eq!(mesh.provider_for("cache", &req("*")), None);
        assert_eq!(mesh.provider_for("queue", &req("*")), None);
        assert_eq!(mesh.provider_for("web", &req("*")), None);
        assert!(mesh.update(&status(vec![])));
        assert_eq!(mesh.provider_for("db", &req("^1.2")), None);
    }

    #[test]
    fn prefixes_are_aligned_and_coloured_on_request() {
        let names = ["api".to_owned(), "migrate".to_owned()];
        let printer = Printer::new(names.iter(), false);
        assert_eq!(printer.width, 7);
        assert!(printer.colours.is_none());
        assert_eq!(prefix("api", 7, None), "api     | ");
        assert_eq!(prefix("migrate", 7, None), "migrate | ");
        assert_eq!(prefix("api", 3, Some(36)), "\x1b[36mapi | \x1b[0m");
        let coloured = Printer::new(names.iter(), true);
        assert_eq!(coloured.colours.unwrap()["migrate"], PALETTE[1]);
    }

    #[tokio::test]
    async fn the_probe_checks_a_loopback_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 503 Busy\r\n\r\n",
            ] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        use mesh_core::health::Probe;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let check = HealthCheck::new(Probe::Path("/healthz".into()));
        let probe = Loopback {
            schemes: BTreeMap::new(),
        };
        assert!(probe.check("api", port, &check).await);
        assert!(!probe.check("api", port, &check).await);
        let tcp = HealthCheck::new(Probe::Tcp);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(!probe.check("api", closed, &tcp).await);
    }
}
