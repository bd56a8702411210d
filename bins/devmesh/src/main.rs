//! `devmesh`: the command line of devmesh. Talks to the local `devmeshd`
//! over its control socket, starting the daemon when it is not running.
//!
//! Exit codes: 0 success, 1 the request failed, 2 bad usage or input,
//! 3 the daemon could not be reached or started.

mod cert;
mod daemon;
mod doctor;
mod hosts;
mod output;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mesh_config::Project;
use mesh_control::{ControlError, HealthSpec, Request, RunResult, ServiceSpec};
use mesh_core::health::{HealthCheck, HealthError};

/// Share local development services with your team over libp2p.
#[derive(Debug, Parser)]
#[command(name = "devmesh", version, about)]
struct Cli {
    /// Home directory of the node to talk to [default: ~/.devmesh]
    #[arg(long, global = true, env = "DEVMESH_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share a local service until Ctrl-C (or until stopped with --detach)
    Run {
        /// Service name; its defaults come from [services.<name>] of devmesh.toml
        name: String,
        /// Local port the service listens on
        #[arg(long)]
        port: Option<u16>,
        /// Semantic version of the service, such as 1.4.2
        #[arg(long = "version", value_name = "SEMVER")]
        service_version: Option<String>,
        /// Path prefix the service claims; repeat for several
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Version requirement of this service on another, such as api=^2.1; repeat for several
        #[arg(long = "require", value_name = "SERVICE=REQ")]
        requires: Vec<String>,
        #[command(flatten)]
        health: HealthFlags,
        /// The backend speaks HTTP/2 (h2c, or h2 over TLS with --scheme https)
        #[arg(long)]
        http2: bool,
        /// How this node connects to the backend: http, or https for a
        /// backend that serves TLS itself [default: http]
        #[arg(long, value_name = "http|https")]
        scheme: Option<String>,
        /// Keep sharing after this command exits; stop with `devmesh stop`
        #[arg(long)]
        detach: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a service
    Stop { name: String },
    /// Show where requests go, or change it: pin a provider, require a version, stickiness, retries
    Route {
        /// Service to change; without one, shows every service (and --versions/--retry change the node's defaults)
        service: Option<String>,
        /// Send every request for the service to this provider (peer id) only
        #[arg(long, value_name = "PEER_ID")]
        peer: Option<String>,
        /// Version requirement of this node's requests, such as ^2.1
        #[arg(long, value_name = "REQ")]
        require: Option<String>,
        /// When no provider satisfies a requirement: warn (serve anyway, with a warning header) or strict (409)
        #[arg(long, value_parser = ["warn", "strict"])]
        versions: Option<String>,
        /// Keep each client on one provider (by cookie)
        #[arg(long, conflicts_with = "no_sticky")]
        sticky: bool,
        /// Turn stickiness off
        #[arg(long)]
        no_sticky: bool,
        /// Which failed requests go to the next provider: idempotent, all or never
        #[arg(long, value_parser = ["idempotent", "all", "never"])]
        retry: Option<String>,
        /// Drop the service's settings (before applying the other flags)
        #[arg(long)]
        clear: bool,
        #[arg(long)]
        json: bool,
    },
    /// This node and every service it knows, with versions, providers and routes
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Connected peers, their addresses and whether the link is direct or relayed
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// Join a team: with an invite token, or connect to a peer by multiaddr
    Join {
        /// Invite token (devmesh-invite:...) from `devmesh invite`, or a
        /// multiaddr such as /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
        target: String,
        /// Namespace to move to, with a multiaddr
        #[arg(long)]
        namespace: Option<String>,
        /// File holding the namespace secret (64 hex digits), with --namespace
        #[arg(long, requires = "namespace")]
        secret_file: Option<PathBuf>,
        /// Seconds to wait for the first member before returning
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print an invite token for the namespace (making it a secret if it has none)
    Invite {
        /// Namespace [default: this node's]
        #[arg(long)]
        namespace: Option<String>,
        /// Bootstrap multiaddr to put in the token; repeat for several [default: this node's bootstrap peers]
        #[arg(long)]
        bootstrap: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Explain how this node connects: addresses, NAT, relay, peers, and what to fix
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Point <service>.devmesh at this machine in the hosts file, for every
    /// service the daemon knows (shows the change unless --yes)
    Install {
        /// Write the hosts file; without it, only show what would change
        #[arg(long)]
        yes: bool,
        /// Remove the devmesh block from the hosts file
        #[arg(long)]
        remove: bool,
    },
    /// Start or stop the background daemon
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
    /// HTTPS on the front door: the node's local certificate authority
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Make the local CA (once; reused later) and show how to trust it
    Install {
        /// Also trust it: system store when writable, browsers' NSS
        /// databases when certutil is installed
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Health-check flags of `devmesh run`.
#[derive(Debug, clap::Args)]
struct HealthFlags {
    /// Health check: a path on the backend (/healthz), an http:// URL, or tcp
    #[arg(long, value_name = "PATH|URL|tcp")]
    health: Option<String>,
    /// Time between health checks, such as 2s or 500ms [default: 2s]
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Time one health check may take [default: 1s]
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Passing checks in a row that make the service healthy [default: 2]
    #[arg(long, value_name = "N")]
    healthy_threshold: Option<u32>,
    /// Failing checks in a row that make the service unhealthy [default: 2]
    #[arg(long, value_name = "N")]
    unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum DaemonAction {
    /// Start devmeshd in the background if it is not running
    Start,
    /// Stop devmeshd (its services are withdrawn)
    Stop,
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = match error.downcast_ref::<ControlError>() {
            Some(ControlError::Refused(_)) => 1,
            Some(_) => 3,
            None if error.is::<daemon::Unreachable>() => 3,
            None if error.is::<mesh_config::ConfigError>() => 2,
            None if error.is::<mesh_tls::Error>() => 1,
            None => 1,
        };
        Failure { code, error }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devmesh: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("devmesh: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let home = match cli.home {
        Some(h) => h,
        None => mesh_control::default_home()
            .context("HOME is not set; pass --home or set DEVMESH_HOME")?,
    };
    match cli.command {
        Command::Run {
            name,
            port,
            service_version,
            routes,
            requires,
            health,
            http2,
            scheme,
            detach,
            json,
        } => {
            let spec = service_spec(
                name,
                port,
                service_version,
                routes,
                requires,
                health,
                Backend { http2, scheme },
            )?;
            let mut client = daemon::connect_or_start(&home).await?;
            let result: RunResult = client
                .call_as(&Request::Run {
                    service: spec,
                    hold: !detach,
                })
                .await?;
            if json {
                output::json(&result);
            } else {
                println!("{}", result.url);
                eprintln!(
                    "devmesh: sharing {}@{} as {}{}",
                    result.name,
                    result.version,
                    result.url,
                    if detach { "" } else { " (Ctrl-C to stop)" }
                );
            }
            if detach {
                return Ok(());
            }
            let mut sigterm =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
                _ = client.closed() => {
                    return Err(anyhow::anyhow!("devmeshd stopped; {} is no longer shared", result.name).into());
                }
            }
            // Closing the connection withdraws the service; stop explicitly
            // as well so the withdrawal is done before we exit.
            let _ = client
                .call(&Request::Stop {
                    name: result.name.clone(),
                })
                .await;
            eprintln!("devmesh: stopped sharing {}", result.name);
            Ok(())
        }
        Command::Stop { name } => {
            let mut client = daemon::connect(&home).await?;
            client.call(&Request::Stop { name: name.clone() }).await?;
            eprintln!("devmesh: stopped sharing {name}");
            Ok(())
        }
        Command::Route {
            service,
            peer,
            require,
            versions,
            sticky,
            no_sticky,
            retry,
            clear,
            json,
        } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let result: mesh_control::RouteResult = client
                .call_as(&Request::Route {
                    service,
                    pin: peer,
                    require,
                    versions,
                    sticky: if sticky {
                        Some(true)
                    } else if no_sticky {
                        Some(false)
                    } else {
                        None
                    },
                    retry,
                    clear,
                })
                .await?;
            if json {
                output::json(&result);
            } else {
                output::routes(&result);
            }
            Ok(())
        }
        Command::Status { json } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let status: mesh_control::Status = client.call_as(&Request::Status).await?;
            if json {
                output::json(&status);
            } else {
                output::status(&status);
            }
            Ok(())
        }
        Command::Peers { json } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let peers: Vec<mesh_control::PeerStatus> = client.call_as(&Request::Peers).await?;
            if json {
                output::json(&peers);
            } else {
                output::peers(&peers);
            }
            Ok(())
        }
        Command::Join {
            target,
            namespace,
            secret_file,
            wait,
            json,
        } => join(&home, target, namespace, secret_file, wait, json).await,
        Command::Invite {
            namespace,
            bootstrap,
            json,
        } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let invite: mesh_control::InviteResult = client
                .call_as(&Request::Invite {
                    namespace,
                    bootstrap,
                })
                .await?;
            if json {
                output::json(&invite);
                return Ok(());
            }
            println!("{}", invite.token);
            if invite.created_secret {
                eprintln!(
                    "devmesh: namespace {} has a new secret; only nodes that join with this token are members",
                    invite.namespace
                );
            }
            if invite.joined {
                eprintln!(
                    "devmesh: this node is now in namespace {}",
                    invite.namespace
                );
            }
            if invite.bootstrap.is_empty() {
                eprintln!(
                    "devmesh: the token holds no bootstrap address, so only nodes on this LAN (mDNS) can use it; add the team relay with --bootstrap <multiaddr>"
                );
            }
            eprintln!(
                "devmesh: keep the token private: it holds the namespace secret. Teammates run `devmesh join <token>`"
            );
            Ok(())
        }
        Command::Doctor { json } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let status: mesh_control::Status = client.call_as(&Request::Status).await?;
            let peers: Vec<mesh_control::PeerStatus> = client.call_as(&Request::Peers).await?;
            let findings = doctor::examine(&status, &peers);
            if json {
                output::json(&serde_json::json!({
                    "status": status,
                    "peers": peers,
                    "findings": findings,
                }));
            } else {
                doctor::print(&status, &peers, &findings);
            }
            if findings.iter().any(|f| f.level == doctor::Level::Problem) {
                return Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!("doctor found problems (listed above)"),
                });
            }
            Ok(())
        }
        Command::Install { yes, remove } => install(&home, yes, remove).await,
        Command::Cert {
            action: CertAction::Install { yes, json },
        } => {
            cert::install(&home, yes, json)?;
            Ok(())
        }
        Command::Daemon {
            action: DaemonAction::Start,
        } => {
            daemon::connect_or_start(&home).await?;
            Ok(())
        }
        Command::Daemon {
            action: DaemonAction::Stop,
        } => {
            let mut client = daemon::connect(&home).await?;
            client.call(&Request::Shutdown).await?;
            client.closed().await;
            daemon::wait_gone(&home).await;
            eprintln!("devmesh: devmeshd stopped");
            Ok(())
        }
    }
}

/// `devmesh join`: with a token or a namespace, moves the node into the
/// namespace and waits until a member answers, a member refuses us, or
/// `wait` seconds pass.
async fn join(
    home: &std::path::Path,
    target: String,
    namespace: Option<String>,
    secret_file: Option<PathBuf>,
    wait: u64,
    json: bool,
) -> Result<(), Failure> {
    let usage = |error: anyhow::Error| Failure { code: 2, error };
    let (addrs, namespace, secret) = if target
        .trim()
        .starts_with(mesh_core::namespace::INVITE_PREFIX)
    {
        if namespace.is_some() {
            return Err(usage(anyhow::anyhow!(
                "an invite token already names its namespace; drop --namespace"
            )));
        }
        let invite = mesh_core::Invite::decode(&target).map_err(|e| usage(e.into()))?;
        (
            invite.bootstrap.iter().map(ToString::to_string).collect(),
            Some(invite.namespace),
            invite.secret.map(|s| s.to_hex()),
        )
    } else {
        let secret = match secret_file {
            Some(path) => Some(
                mesh_core::Secret::load(&path)
                    .map_err(|e| usage(e.into()))?
                    .to_hex(),
            ),
            None => None,
        };
        (vec![target], namespace, secret)
    };
    let moving = namespace.is_some();
    let mut client = daemon::connect_or_start(home).await?;
    let joined: mesh_control::JoinResult = client
        .call_as(&Request::Join {
            addrs,
            namespace,
            secret,
        })
        .await?;
    for u in &joined.unreachable {
        eprintln!("devmesh: cannot reach {u}");
    }
    if !moving {
        if json {
            output::json(&joined);
        } else {
            for p in &joined.peers {
                println!("{p}");
                eprintln!("devmesh: connected to {p}");
            }
        }
        return Ok(());
    }
    // Wait for the namespace to answer: a member admits us, or refuses.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    let (members, failure) = loop {
        let status: mesh_control::Status = client.call_as(&Request::Status).await?;
        let peers: Vec<mesh_control::PeerStatus> = client.call_as(&Request::Peers).await?;
        let members = peers.iter().filter(|p| p.kind == "member").count();
        let failure = status.admission_failures.first().map(|f| f.reason.clone());
        if members > 0 || failure.is_some() || std::time::Instant::now() >= deadline {
            break (members, failure);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    if json {
        output::json(&serde_json::json!({
            "namespace": joined.namespace,
            "peers": joined.peers,
            "unreachable": joined.unreachable,
            "members": members,
            "error": failure,
        }));
    }
    if let Some(reason) = failure {
        return Err(Failure {
            code: 1,
            error: anyhow::anyhow!("{reason}"),
        });
    }
    if !json {
        println!("{}", joined.namespace);
        if members > 0 {
            eprintln!(
                "devmesh: joined namespace {}: {members} member(s) online",
                joined.namespace
            );
        } else if joined.peers.is_empty() && !joined.unreachable.is_empty() {
            eprintln!(
                "devmesh: joined namespace {}, but no bootstrap peer answered; devmeshd keeps trying (`devmesh doctor` explains)",
                joined.namespace
            );
        } else {
            eprintln!(
                "devmesh: joined namespace {}; no other member is online yet (they appear as they come online)",
                joined.namespace
            );
        }
    }
    Ok(())
}

/// `devmesh install`: writes (or shows, or removes) the devmesh block of the
/// hosts file (`DEVMESH_HOSTS_FILE`, else /etc/hosts).
async fn install(home: &std::path::Path, yes: bool, remove: bool) -> Result<(), Failure> {
    let path = hosts::path();
    let shown = path.display();
    let text = hosts::read(&path)?;
    let (block, names, port) = if remove {
        (None, Vec::new(), 0)
    } else {
        let mut client = daemon::connect(home).await?;
        let status: mesh_control::Status = client.call_as(&Request::Status).await?;
        let mut names: Vec<String> = status.services.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(anyhow::anyhow!(
                "no services are known yet, so there are no names to add; share one with `devmesh run <name> --port <port>` or join a team, then run `devmesh install` again"
            )
            .into());
        }
        let port = status
            .proxy_addr
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .context("this node has no front door (a relay?); run `devmesh install` against a member node")?;
        (Some(hosts::block(&names)), names, port)
    };
    let url = |name: &str| match port {
        80 => format!("http://{name}.devmesh/"),
        p => format!("http://{name}.devmesh:{p}/"),
    };
    let urls: Vec<String> = names.iter().map(|n| url(n)).collect();
    let new = hosts::apply(&text, block.as_deref()).with_context(|| format!("{shown}"))?;
    let reminder = || {
        if let Some(name) = names.first()
            && port != 80
        {
            eprintln!(
                "devmesh: a hosts file cannot hold ports: open {} (with the front door's port {port}), not http://{name}.devmesh/",
                url(name)
            );
        }
    };
    if new == text {
        if remove {
            eprintln!("devmesh: {shown} has no devmesh block; nothing to remove");
        } else {
            eprintln!("devmesh: {shown} is up to date");
            for url in &urls {
                println!("{url}");
            }
            reminder();
        }
        return Ok(());
    }
    let current = hosts::current(&text);
    if !yes {
        match (&block, &current) {
            (None, Some(old)) => {
                print!("{old}");
                eprintln!(
                    "devmesh: dry run: would remove the block above from {shown}; run `devmesh install --remove --yes` to do it"
                );
            }
            (Some(new_block), old) => {
                print!("{new_block}");
                eprintln!(
                    "devmesh: dry run: would {} {shown}; run `devmesh install --yes` to write it",
                    if old.is_some() {
                        "replace the devmesh block with the block above in"
                    } else {
                        "add the block above to the end of"
                    }
                );
                reminder();
            }
            (None, None) => {}
        }
        return Ok(());
    }
    hosts::write(&path, &new)?;
    if remove {
        eprintln!("devmesh: removed the devmesh block from {shown}");
    } else {
        eprintln!(
            "devmesh: {} the devmesh block in {shown} ({} names)",
            if current.is_some() {
                "updated"
            } else {
                "added"
            },
            urls.len()
        );
        for url in &urls {
            println!("{url}");
        }
        reminder();
    }
    Ok(())
}

/// Builds the service to share from the flags, filling gaps from
/// `[services.<name>]` of the nearest devmesh.toml.
/// How `devmesh run` was told to speak to the backend.
struct Backend {
    http2: bool,
    scheme: Option<String>,
}

fn service_spec(
    name: String,
    port: Option<u16>,
    version: Option<String>,
    routes: Vec<String>,
    requires: Vec<String>,
    health: HealthFlags,
    backend: Backend,
) -> Result<ServiceSpec, Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let project = match Project::find(&cwd) {
        Some(path) => Some(Project::load(&path)?),
        None => None,
    };
    let from_file = project.as_ref().and_then(|p| p.services.get(&name));
    let port = port.or(from_file.map(|s| s.port)).ok_or_else(|| Failure {
        code: 2,
        error: anyhow::anyhow!(
            "no port for service {name:?}: pass --port <port>, or add [services.{name}] with port = <port> to devmesh.toml"
        ),
    })?;
    let version = version
        .or(from_file.map(|s| s.version.get_ref().clone()))
        .unwrap_or_else(|| "0.0.0".to_owned());
    if let Err(e) = semver::Version::parse(&version) {
        return Err(Failure {
            code: 2,
            error: anyhow::anyhow!(
                "invalid --version {version:?}: {e}; use a semantic version such as 1.4.2"
            ),
        });
    }
    let routes = if routes.is_empty() {
        from_file
            .map(|s| s.routes.iter().map(|r| r.get_ref().clone()).collect())
            .unwrap_or_default()
    } else {
        routes
    };
    let mut required: std::collections::BTreeMap<String, String> = from_file
        .map(|s| {
            s.requires
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect()
        })
        .unwrap_or_default();
    for r in requires {
        let Some((service, req)) = r.split_once('=') else {
            return Err(Failure {
                code: 2,
                error: anyhow::anyhow!(
                    "--require {r:?}: write it as <service>=<requirement>, such as api=^2.1"
                ),
            });
        };
        if let Err(e) = semver::VersionReq::parse(req.trim()) {
            return Err(Failure {
                code: 2,
                error: anyhow::anyhow!(
                    "--require {r:?}: {:?} is not a version requirement ({e}); write it like ^2.1",
                    req.trim()
                ),
            });
        }
        required.insert(service.trim().to_owned(), req.trim().to_owned());
    }
    let health =
        health_check(from_file.and_then(|s| s.health_check()), health).map_err(|e| Failure {
            code: 2,
            error: anyhow::anyhow!("{}: {}", e.setting.flag(), e.message),
        })?;
    let scheme = backend
        .scheme
        .as_deref()
        .or(from_file.map(|s| s.scheme()))
        .unwrap_or("http");
    let scheme = scheme.parse::<mesh_core::Scheme>().map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("invalid --scheme: {e}"),
    })?;
    Ok(ServiceSpec {
        name,
        port,
        version,
        routes,
        tags: from_file.map(|s| s.tags.clone()).unwrap_or_default(),
        requires: required,
        health: health.as_ref().map(HealthSpec::from_check),
        h2: backend.http2 || from_file.is_some_and(|s| s.http2),
        scheme,
    })
}

/// The health check of `devmesh run`: each flag overrides the same setting
/// of devmesh.toml.
fn health_check(
    from_file: Option<HealthCheck>,
    flags: HealthFlags,
) -> Result<Option<HealthCheck>, HealthError> {
    use mesh_core::health::{Probe, Setting, parse_duration};
    let mut check = match (flags.health, from_file) {
        (Some(target), Some(mut check)) => {
            check.probe = Probe::parse(&target)?;
            Some(check)
        }
        (Some(target), None) => Some(HealthCheck::new(Probe::parse(&target)?)),
        (None, check) => check,
    };
    let Some(check) = check.as_mut() else {
        let stray = [
            flags.health_interval.is_some().then_some(Setting::Interval),
            flags.health_timeout.is_some().then_some(Setting::Timeout),
            flags
                .healthy_threshold
                .is_some()
                .then_some(Setting::HealthyThreshold),
            flags
                .unhealthy_threshold
                .is_some()
                .then_some(Setting::UnhealthyThreshold),
        ];
        if let Some(setting) = stray.into_iter().flatten().next() {
            return Err(HealthError {
                setting,
                message: "needs --health <PATH|URL|tcp> (or health in devmesh.toml)".into(),
            });
        }
        return Ok(None);
    };
    if let Some(v) = flags.health_interval {
        check.interval = parse_duration(Setting::Interval, &v)?;
    }
    if let Some(v) = flags.health_timeout {
        check.timeout = parse_duration(Setting::Timeout, &v)?;
    }
    if let Some(n) = flags.healthy_threshold {
        check.healthy_threshold = n;
    }
    if let Some(n) = flags.unhealthy_threshold {
        check.unhealthy_threshold = n;
    }
    check.validate()?;
    Ok(Some(check.clone()))
}
