//! `devmesh connect`: a loopback listener for a teammate's TCP service,
//! with its fallback port from the flag or from `listen` of
//! `[services.<name>]` in the nearest devmesh.toml.

use std::path::Path;

use anyhow::Context as _;
use mesh_config::Project;
use mesh_control::{ConnectSpec, ListenerStatus, Request};

use crate::{Failure, cli::ConnectArgs, daemon, output};

/// `devmesh connect`.
pub async fn connect(home: &Path, args: ConnectArgs) -> Result<(), Failure> {
    let port = match (args.port, args.remove) {
        (Some(port), _) => Some(port),
        (None, true) => None,
        (None, false) => listen_from_project(&args.service)?,
    };
    let mut client = daemon::connect_or_start(home).await?;
    let state: ListenerStatus = client
        .call_as(&Request::Connect(ConnectSpec {
            service: args.service.clone(),
            port,
            remove: args.remove,
        }))
        .await?;
    output::emit(args.json, &state, |s| {
        if args.remove {
            eprintln!("devmesh: forgot the listener setting of {}", s.service);
        }
        output::listener(s);
    });
    if !args.remove && state.listen.is_none() {
        let why = state.problem.as_deref().unwrap_or("no port is free");
        return Err(Failure::failed(anyhow::anyhow!(
            "{} has no listener yet: {why}",
            state.service
        )));
    }
    Ok(())
}

/// `listen` of `[services.<service>]` in the nearest devmesh.toml.
fn listen_from_project(service: &str) -> Result<Option<u16>, Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let Some(path) = Project::find(&cwd) else {
        return Ok(None);
    };
    let project = Project::load(&path)?;
    Ok(project.services.get(service).and_then(|s| s.listen_port()))
}
