//! `devmesh`: the command line of devmesh. Talks to the local `devmeshd`
//! over its control socket, starting the daemon when it is not running.
//!
//! Exit codes: 0 success, 1 the request failed, 2 bad usage or input,
//! 3 the daemon could not be reached or started.

mod daemon;
mod output;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mesh_config::Project;
use mesh_control::{ControlError, Request, RunResult, ServiceSpec};

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
        /// Keep sharing after this command exits; stop with `devmesh stop`
        #[arg(long)]
        detach: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a service
    Stop { name: String },
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
    /// Connect to a peer of the team by multiaddr
    Join {
        /// Multiaddr such as /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
        addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Start or stop the background daemon
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
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
            detach,
            json,
        } => {
            let spec = service_spec(name, port, service_version, routes)?;
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
        Command::Join { addr, json } => {
            let mut client = daemon::connect_or_start(&home).await?;
            let joined: mesh_control::JoinResult = client.call_as(&Request::Join { addr }).await?;
            if json {
                output::json(&joined);
            } else {
                println!("{}", joined.peer_id);
                eprintln!("devmesh: connected to {}", joined.peer_id);
            }
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

/// Builds the service to share from the flags, filling gaps from
/// `[services.<name>]` of the nearest devmesh.toml.
fn service_spec(
    name: String,
    port: Option<u16>,
    version: Option<String>,
    routes: Vec<String>,
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
    Ok(ServiceSpec {
        name,
        port,
        version,
        routes,
        tags: from_file.map(|s| s.tags.clone()).unwrap_or_default(),
    })
}
