//! `devmesh`: the command line of devmesh. Talks to the local `devmeshd`
//! over its control socket, starting the daemon when it is not running.
//!
//! Exit codes: 0 success, 1 the request failed, 2 bad usage or input,
//! 3 the daemon could not be reached or started.

#[macro_use]
mod stdout;
mod autostart;
mod cli;
mod colour;
mod commands;
mod daemon;
mod doctor;
mod front;
mod hosts;
mod output;
mod progress;
mod site;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use mesh_control::ControlError;

use crate::cli::{CertAction, Cli, Command, DaemonAction, PluginAction};

/// An error with the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// Bad usage or input: exit code 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }

    /// The request failed: exit code 1.
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
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
    let result = runtime.block_on(run(cli));
    stdout::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("devmesh: {}", mesh_core::error::Chain(error.as_ref()));
            ExitCode::from(code)
        }
    }
}

/// Runs the command of `cli`.
async fn run(cli: Cli) -> Result<(), Failure> {
    let home = match cli.home {
        Some(h) => h,
        None => mesh_control::default_home()
            .context("HOME is not set; pass --home or set DEVMESH_HOME")?,
    };
    let home = home.as_path();
    match cli.command {
        Command::Run(args) => commands::run::run(home, args).await,
        Command::Up(args) => commands::up::up(home, args).await,
        Command::Ps { json } => commands::project::ps(home, json).await,
        Command::Logs(args) => commands::project::logs(home, args).await,
        Command::Down => commands::project::down(home).await,
        Command::Plugin {
            action: PluginAction::List { json },
        } => commands::plugin::list(json),
        Command::Vscode { write } => commands::vscode::vscode(write),
        Command::Completions { shell } => commands::shell::completions(shell),
        Command::Man { dir } => commands::shell::man(dir.as_deref()),
        Command::FromDocker {
            json,
            write,
            force,
            yes,
        } => commands::docker::from_docker(json, write, force, yes).await,
        Command::Share {
            docker: true,
            label,
        } => commands::docker::share(home, label).await,
        Command::Share { docker: false, .. } => Err(Failure::usage(anyhow::anyhow!(
            "devmesh share shares containers: pass --docker (to share a local port, use devmesh run)"
        ))),
        Command::External(args) => commands::plugin::run(home, args).await,
        Command::Stop { name } => commands::run::stop(home, name).await,
        Command::Route(args) => commands::route::route(home, args).await,
        Command::Inspect(args) => commands::inspect::inspect(home, args).await,
        Command::Replay(args) => commands::inspect::replay(home, args).await,
        Command::Connect(args) => commands::connect::connect(home, args).await,
        Command::Db { action } => commands::db::db(home, action).await,
        Command::Status { json } => commands::status::status(home, json).await,
        Command::Peers { json, wide } => commands::status::peers(home, json, wide).await,
        Command::Doctor { json } => commands::status::doctor(home, json).await,
        Command::Graph { json, dot } => {
            use commands::graph::Format;
            let format = match (json, dot) {
                (true, _) => Format::Json,
                (_, true) => Format::Dot,
                _ => Format::Text,
            };
            commands::graph::graph(home, format).await
        }
        Command::Dashboard { print } => commands::dashboard::dashboard(home, print).await,
        Command::Join(args) => commands::join::join(home, args).await,
        Command::Invite {
            namespace,
            bootstrap,
            rotate,
            yes,
            json,
        } => {
            let ask = commands::join::InviteAsk {
                namespace,
                bootstrap,
                rotate,
                yes,
            };
            commands::join::invite(home, ask, json).await
        }
        Command::Install { yes, remove } => commands::install::install(home, yes, remove).await,
        Command::Cert {
            action: CertAction::Install { yes, json },
        } => Ok(commands::cert::install(home, yes, json).await?),
        Command::Daemon {
            action: DaemonAction::Start,
        } => commands::daemon::start(home).await,
        Command::Daemon {
            action: DaemonAction::Stop,
        } => commands::daemon::stop(home).await,
        Command::Daemon {
            action: DaemonAction::Install,
        } => commands::daemon::install(home),
        Command::Daemon {
            action: DaemonAction::Uninstall,
        } => commands::daemon::uninstall(),
    }
}
