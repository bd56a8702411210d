//! `connect`: the loopback listeners of remote TCP services (the proxy
//! runs them; this changes their settings and shows their state), and
//! their part of `status`. The settings are kept in
//! `<home>/tcp-connects.json` and applied again when the daemon starts.

use std::{collections::BTreeMap, path::PathBuf};

use mesh_core::{Snapshot, record::ServiceProtocol};
use mesh_proxy::{
    choose::Target,
    policy::Routing,
    tcp::listeners::{self, ListenerState},
};
use tracing::warn;

use super::{Server, ServerInfo};
use crate::{ConnectSpec, ListenerStatus, RequestError, Status};

/// File of the `devmesh connect` settings in the daemon's home.
const CONNECTS_FILE: &str = "tcp-connects.json";

fn connects_path(info: &ServerInfo) -> PathBuf {
    info.home.join(CONNECTS_FILE)
}

/// Applies the settings of an earlier run to the proxy's listeners; a
/// file that cannot be read is logged and left alone.
pub(super) fn restore(info: &ServerInfo) {
    let Some(tcp) = &info.tcp else {
        return;
    };
    let path = connects_path(info);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the tcp listener settings");
            return;
        }
    };
    match serde_json::from_str::<BTreeMap<String, Option<u16>>>(&text) {
        Ok(settings) => {
            for (service, port) in settings {
                tcp.connect(&service, port);
            }
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "ignoring malformed tcp listener settings");
        }
    }
}

/// How long `connect` waits for the proxy to act on a new setting.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

impl Server {
    /// Asks for (or, with `remove`, forgets) a listener of a TCP service.
    pub(super) async fn connect(&self, spec: ConnectSpec) -> Result<ListenerStatus, RequestError> {
        mesh_core::record::validate_service_name(&spec.service)?;
        let tcp = self.info.tcp.as_ref().ok_or(RequestError::NoListeners)?;
        let service = spec.service;
        if spec.remove {
            tcp.disconnect(&service);
        } else {
            let snapshot = self.node.snapshot();
            let providers = snapshot.providers(&service);
            if providers
                .iter()
                .any(|p| p.record().protocol != ServiceProtocol::Tcp)
            {
                return Err(RequestError::ConnectToHttp { service });
            }
            if spec.port == Some(0) {
                return Err(RequestError::PortZero { service });
            }
            if providers.is_empty() && spec.port.is_none() {
                return Err(RequestError::ConnectWithoutPort { service });
            }
            tcp.connect(&service, spec.port);
        }
        self.save_connects()?;
        let state = tcp.settled(&service, SETTLE).await;
        let snapshot = self.node.snapshot();
        Ok(listener_status(
            &snapshot,
            self.info.routing.as_deref(),
            &service,
            state,
        ))
    }

    /// Writes the `devmesh connect` settings, for the next start.
    fn save_connects(&self) -> Result<(), RequestError> {
        let Some(tcp) = &self.info.tcp else {
            return Ok(());
        };
        let (settings, _) = tcp.configured();
        let path = connects_path(&self.info);
        let text = serde_json::to_string_pretty(&settings).map_err(RequestError::Encode)?;
        std::fs::write(&path, text).map_err(|source| RequestError::SaveConnects { path, source })
    }

    /// Adds the listeners to `status`, and their address to the entries of
    /// their services.
    pub(super) fn add_listeners(&self, snapshot: &Snapshot, status: &mut Status) {
        let Some(tcp) = &self.info.tcp else {
            return;
        };
        let routing = self.info.routing.as_deref();
        status.listeners = tcp
            .states()
            .into_iter()
            .map(|(service, state)| listener_status(snapshot, routing, &service, state))
            .collect();
        for entry in &mut status.services {
            entry.listen = status
                .listeners
                .iter()
                .find(|l| l.service == entry.name)
                .and_then(|l| l.listen.clone());
            if let (Some(listen), true) = (&entry.listen, entry.url.is_empty()) {
                entry.url = format!("tcp://{listen}");
            }
        }
    }
}

/// One listener as `status` and `connect` show it: where it listens, and
/// where a new connection would go now (or why nowhere).
fn listener_status(
    snapshot: &Snapshot,
    routing: Option<&Routing>,
    service: &str,
    state: ListenerState,
) -> ListenerStatus {
    let mut provider = None;
    let mut problem = state.problem;
    if let Some(routing) = routing {
        match listeners::choice(snapshot, service, routing).0 {
            Ok(choice) => {
                provider = choice.candidates.first().map(|c| match c.target {
                    Target::Local { port, .. } => format!("this node (port {port})"),
                    Target::Remote { peer, direct, .. } => {
                        format!("{peer} ({})", if direct { "direct" } else { "relayed" })
                    }
                });
            }
            Err(refusal) => {
                problem.get_or_insert_with(|| refusal.describe(service));
            }
        }
    }
    ListenerStatus {
        service: service.to_owned(),
        listen: state.listen.map(|a| a.to_string()),
        configured_port: state.configured,
        provider,
        problem,
    }
}
