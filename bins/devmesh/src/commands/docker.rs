//! `devmesh from-docker` and `devmesh share --docker`: the containers of
//! the local Docker Engine API (Docker, or Podman's) as services.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use mesh_config::{
    Project,
    edit::{NewService, Outcome, add_services},
};
use mesh_control::{Client, Request, RunResult};
use mesh_docker::{Engine, Offer, follow::Sink, offers};

use crate::{Failure, daemon, output};

/// `devmesh from-docker [--json] [--write [--force] [--yes]]`.
pub async fn from_docker(json: bool, write: bool, force: bool, yes: bool) -> Result<(), Failure> {
    let engine = Engine::connect(&mesh_docker::Env::current()).await?;
    let found = offers(&engine.containers().await?, None);
    if !write {
        output::emit(json, &found, |found| print!("{}", listing(found)));
        if !json && found.is_empty() {
            eprintln!(
                "devmesh: no running container publishes a TCP port ({})",
                engine.socket().display()
            );
        }
        return Ok(());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let path = Project::find(&cwd).unwrap_or_else(|| cwd.join(mesh_config::PROJECT_FILE));
    let source = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into());
        }
    };
    let new: Vec<NewService> = found
        .iter()
        .map(|o| NewService {
            name: o.service.clone(),
            port: o.port,
            version: o.version.clone(),
            docker: Some(o.container.clone()),
            health: o.health.clone(),
        })
        .collect();
    let (text, outcomes) = add_services(&path, &source, &new, force)?;
    // What is written must load.
    Project::parse(&path, &text)?;
    for (name, outcome) in &outcomes {
        if *outcome == Outcome::Kept {
            eprintln!(
                "devmesh: [services.{name}] exists in {}; kept as it is (--force replaces its port, version and docker keys)",
                path.display()
            );
        }
    }
    if text == source {
        eprintln!("devmesh: {} is up to date", path.display());
        return Ok(());
    }
    if !yes {
        print!("{}", diff(&path, &source, &text));
        eprintln!(
            "devmesh: this would change {}; run again with --yes to write it",
            path.display()
        );
        return Ok(());
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let written: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| *o != Outcome::Kept)
        .map(|(n, _)| n.as_str())
        .collect();
    eprintln!(
        "devmesh: wrote {} to {}",
        written.join(", "),
        path.display()
    );
    Ok(())
}

/// The table of `devmesh from-docker`.
fn listing(found: &[Offer]) -> String {
    let header = [
        "SERVICE",
        "CONTAINER",
        "IMAGE",
        "PORT",
        "CONTAINER PORT",
        "VERSION",
    ];
    let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(found.iter().map(|o| {
            vec![
                o.service.clone(),
                o.container.clone(),
                o.image.clone(),
                o.port.to_string(),
                o.container_port.to_string(),
                o.version.clone(),
            ]
        }))
        .collect();
    output::aligned(&rows)
}

/// A unified diff of the change to `path`.
fn diff(path: &Path, old: &str, new: &str) -> String {
    let shown = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header(&shown, &shown)
        .to_string()
}

/// `devmesh share --docker [--label KEY=VALUE]`: shares each running
/// container with a published port, and follows the engine: a container
/// that starts is shared at once, one that stops is withdrawn. Runs until
/// Ctrl-C.
pub async fn share(home: &Path, label: Option<String>) -> Result<(), Failure> {
    let only = match label.as_deref() {
        Some(l) => Some(mesh_docker::follow::label(l).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "--label {l:?}: write it as KEY=VALUE, such as devmesh.share=true"
            ))
        })?),
        None => None,
    };
    let engine = Engine::connect(&mesh_docker::Env::current()).await?;
    let mut sink = Held {
        home,
        clients: BTreeMap::new(),
    };
    let mut shared = BTreeMap::new();
    eprintln!(
        "devmesh: following the containers of {} (Ctrl-C to stop sharing them)",
        engine.socket().display()
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ended = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
        e = mesh_docker::follow::follow(&engine, only, &mut sink, &mut shared) => Some(e),
    };
    for offer in shared.values() {
        sink.withdraw(offer).await;
    }
    match ended {
        Some(e) => Err(anyhow::Error::new(e)
            .context("no longer sharing containers")
            .into()),
        None => Ok(()),
    }
}

/// Shares each container over a held control connection of its own
/// (closing it withdraws the service).
struct Held<'a> {
    home: &'a Path,
    clients: BTreeMap<String, Client>,
}

impl Sink for Held<'_> {
    async fn share(&mut self, offer: &Offer) -> bool {
        match share_one(self.home, offer).await {
            Ok((client, result)) => {
                eprintln!(
                    "devmesh: sharing {}@{} from container {} as {}",
                    result.name, result.version, offer.container, result.url
                );
                self.clients.insert(offer.service.clone(), client);
                true
            }
            Err(e) => {
                eprintln!(
                    "devmesh: cannot share container {} as {}: {}",
                    offer.container,
                    offer.service,
                    mesh_core::error::Chain(e.as_ref())
                );
                false
            }
        }
    }

    async fn withdraw(&mut self, offer: &Offer) {
        if let Some(mut client) = self.clients.remove(&offer.service) {
            let _ = client
                .call(&Request::Stop {
                    name: offer.service.clone(),
                })
                .await;
            eprintln!(
                "devmesh: container {} stopped; withdrew {}",
                offer.container, offer.service
            );
        }
    }
}

/// Shares `offer` over a connection of its own.
async fn share_one(home: &Path, offer: &Offer) -> anyhow::Result<(Client, RunResult)> {
    let spec = mesh_control::container_service(offer)
        .with_context(|| format!("label devmesh.health of container {}", offer.container))?;
    let mut client = daemon::connect_or_start(home).await?;
    let result: RunResult = client
        .call_as(&Request::Run {
            service: spec,
            hold: true,
        })
        .await?;
    Ok((client, result))
}
