//! `[docker] share = true`: while the project runs, the containers of the
//! local engine are shared under the project's owner id, so that `devmesh
//! down` (or the end of the project) withdraws them with its services.

use std::{collections::BTreeMap, sync::Arc};

use mesh_config::DockerSection;
use mesh_docker::{Engine, Env, Offer, follow};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{ProjectEvent, chain, container_service, server::Server};

/// Registers containers for a project.
struct Shares {
    server: Arc<Server>,
    owner: u64,
    events: broadcast::Sender<ProjectEvent>,
}

impl follow::Sink for Shares {
    async fn share(&mut self, offer: &Offer) -> bool {
        let result = match container_service(offer) {
            Ok(spec) => self.server.run(spec, true, self.owner).await.map(|_| ()),
            Err(e) => Err(crate::RequestError::BadHealth {
                service: offer.service.clone(),
                source: e,
            }),
        };
        let event = ProjectEvent::Ready {
            service: offer.service.clone(),
            port: Some(offer.port),
            shared: result.is_ok(),
            error: result.as_ref().err().map(|e| chain(e)),
        };
        let _ = self.events.send(event);
        match result {
            Ok(()) => {
                info!(
                    container = offer.container,
                    service = offer.service,
                    "container shared"
                );
                true
            }
            Err(e) => {
                warn!(container = offer.container, error = %chain(&e), "cannot share a container");
                false
            }
        }
    }

    async fn withdraw(&mut self, offer: &Offer) {
        info!(
            container = offer.container,
            service = offer.service,
            "container gone; withdrawn"
        );
        let _ = self.server.stop(&offer.service).await;
    }
}

/// Follows the engine of `env` (the environment of the `devmesh up` that
/// started the project) until `stop`; what it shared is
/// withdrawn when the project releases its owner id.
pub(super) fn spawn(
    server: Arc<Server>,
    owner: u64,
    section: &DockerSection,
    env: Env,
    events: broadcast::Sender<ProjectEvent>,
    stop: CancellationToken,
) {
    let label = section.label.as_ref().map(|l| l.get_ref().clone());
    tokio::spawn(async move {
        let engine = match Engine::connect(&env).await {
            Ok(engine) => engine,
            Err(e) => {
                let error = chain(&e);
                warn!(error, "[docker] share = true, but no container engine");
                let _ = events.send(ProjectEvent::Notice {
                    text: format!("[docker] share = true, but {error}"),
                });
                return;
            }
        };
        let only = label.as_deref().and_then(follow::label);
        let mut sink = Shares {
            server,
            owner,
            events,
        };
        let mut shared = BTreeMap::new();
        tokio::select! {
            () = stop.cancelled() => {}
            e = follow::follow(&engine, only, &mut sink, &mut shared) => {
                warn!(error = %chain(&e), "no longer sharing containers");
            }
        }
    });
}
