//! `devmesh from-docker` and `devmesh share --docker`: the containers of
//! the local Docker Engine API (Docker, or Podman's) as services.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use futures::StreamExt as _;
use mesh_config::{
    Project,
    edit::{NewService, Outcome, add_services},
};
use mesh_control::{Client, HealthSpec, Request, RunResult, ServiceSpec};
use mesh_core::health::{HealthCheck, Probe};
use mesh_docker::{Change, Engine, Offer, offers};

use crate::{Failure, daemon, output};

/// Time after a container event until `share --docker` lists the
/// containers once more.
const SECOND_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// `devmesh from-docker [--json] [--write [--force] [--yes]]`.
pub async fn from_docker(json: bool, write: bool, force: bool, yes: bool) -> Result<(), Failure> {
    let engine = Engine::connect().await?;
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
        Some(l) => Some(l.split_once('=').ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "--label {l:?}: write it as KEY=VALUE, such as devmesh.share=true"
            ))
        })?),
        None => None,
    };
    let engine = Engine::connect().await?;
    let mut changes = engine.changes();
    let mut shares = Shares::default();
    shares.sync(home, &engine, only).await?;
    eprintln!(
        "devmesh: following the containers of {} (Ctrl-C to stop sharing them)",
        engine.socket().display()
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A second look a moment after an event: an engine may report a
    // container's end before its list says so.
    let mut again: Option<tokio::time::Instant> = None;
    loop {
        let second_look = async {
            match again {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            () = second_look => {
                again = None;
                shares.sync(home, &engine, only).await?;
            }
            change = changes.next() => match change {
                Some(Ok(Change::Started { .. } | Change::Gone { .. })) => {
                    shares.sync(home, &engine, only).await?;
                    again = Some(tokio::time::Instant::now() + SECOND_LOOK);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("the container engine went away").into()),
                None => return Err(anyhow::anyhow!("the container engine closed its event stream").into()),
            },
        }
    }
    shares.withdraw_all().await;
    Ok(())
}

/// The containers shared, each over a held control connection (closing
/// it withdraws the service).
#[derive(Default)]
struct Shares(BTreeMap<String, (Offer, Client)>);

impl Shares {
    /// Shares what runs now and is not shared, withdraws what is shared and
    /// no longer runs (or changed).
    async fn sync(
        &mut self,
        home: &Path,
        engine: &Engine,
        only: Option<(&str, &str)>,
    ) -> Result<(), Failure> {
        let now: BTreeMap<String, Offer> = offers(&engine.containers().await?, only)
            .into_iter()
            .map(|o| (o.service.clone(), o))
            .collect();
        let gone: Vec<String> = self
            .0
            .iter()
            .filter(|(name, (offer, _))| now.get(*name) != Some(offer))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.withdraw(&name).await;
        }
        for (name, offer) in now {
            if self.0.contains_key(&name) {
                continue;
            }
            match share_one(home, &offer).await {
                Ok((client, result)) => {
                    eprintln!(
                        "devmesh: sharing {}@{} from container {} as {}",
                        result.name, result.version, offer.container, result.url
                    );
                    self.0.insert(name, (offer, client));
                }
                Err(e) => eprintln!(
                    "devmesh: cannot share container {} as {name}: {}",
                    offer.container,
                    mesh_core::error::Chain(e.as_ref())
                ),
            }
        }
        Ok(())
    }

    async fn withdraw(&mut self, name: &str) {
        if let Some((offer, mut client)) = self.0.remove(name) {
            let _ = client
                .call(&Request::Stop {
                    name: name.to_owned(),
                })
                .await;
            eprintln!(
                "devmesh: container {} stopped; withdrew {name}",
                offer.container
            );
        }
    }

    async fn withdraw_all(&mut self) {
        let names: Vec<String> = self.0.keys().cloned().collect();
        for name in names {
            self.withdraw(&name).await;
        }
    }
}

/// Shares `offer` over a connection of its own.
async fn share_one(home: &Path, offer: &Offer) -> anyhow::Result<(Client, RunResult)> {
    let health = match &offer.health {
        Some(h) => Some(HealthSpec::from_check(&HealthCheck::new(
            Probe::parse(h).with_context(|| {
                format!(
                    "label devmesh.health={h:?} of container {}",
                    offer.container
                )
            })?,
        ))),
        None => None,
    };
    let spec = ServiceSpec {
        name: offer.service.clone(),
        port: offer.port,
        version: offer.version.clone(),
        routes: Vec::new(),
        tags: vec!["docker".into()],
        requires: BTreeMap::new(),
        health,
        h2: false,
        scheme: mesh_core::Scheme::Http,
    };
    let mut client = daemon::connect_or_start(home).await?;
    let result: RunResult = client
        .call_as(&Request::Run {
            service: spec,
            hold: true,
        })
        .await?;
    Ok((client, result))
}
