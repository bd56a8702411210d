//! Which remote TCP service gets a loopback listener on which port, and
//! the state of those listeners that `devmesh status` shows.
//!
//! A service gets a listener on this node when another node announces it
//! as TCP (and this node does not provide it itself), or when the user
//! asked for it with `devmesh connect`. The listener is on 127.0.0.1, on
//! the port the provider announces when that port is free here, else on
//! the port given to `devmesh connect --port`. It is withdrawn when the
//! service is no longer announced (a connected service keeps its listener,
//! which then refuses connections saying why).

use std::{collections::BTreeMap, net::SocketAddr, sync::Mutex, time::Instant};

use mesh_core::{Snapshot, record::ServiceProtocol};
use tokio::sync::Notify;

use crate::{
    choose::{self, Choice, Refusal, Requirement},
    policy::Routing,
};

/// The state of one service's listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerState {
    /// Where it listens; none when no port could be bound.
    pub listen: Option<SocketAddr>,
    /// The port set with `devmesh connect --port`.
    pub configured: Option<u16>,
    /// Why it does not listen, or why its last connection was refused.
    pub problem: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `devmesh connect` settings: service to its fallback port (none:
    /// only the provider's port).
    configured: BTreeMap<String, Option<u16>>,
    states: BTreeMap<String, ListenerState>,
    /// Bumped by every change of `configured`.
    generation: u64,
    /// The generation the proxy last acted on.
    applied: u64,
}

/// The consumer-side listeners of a node: what the user configured, and
/// what each listener is doing. Shared by the proxy (which runs them) and
/// the control API (which changes and shows them).
#[derive(Debug, Default)]
pub struct Listeners {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Listeners {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("listeners lock")
    }

    /// Asks for a listener of `service`, falling back to `port` when the
    /// provider's port is taken here.
    pub fn connect(&self, service: &str, port: Option<u16>) {
        let mut inner = self.inner();
        inner.configured.insert(service.to_owned(), port);
        inner.generation += 1;
        self.changed.notify_one();
    }

    /// Forgets the `devmesh connect` setting of `service`; whether it was
    /// set.
    pub fn disconnect(&self, service: &str) -> bool {
        let mut inner = self.inner();
        let had = inner.configured.remove(service).is_some();
        inner.generation += 1;
        self.changed.notify_one();
        had
    }

    /// The `devmesh connect` settings, and their generation (for
    /// [`Listeners::applied`]).
    pub fn configured(&self) -> (BTreeMap<String, Option<u16>>, u64) {
        let inner = self.inner();
        (inner.configured.clone(), inner.generation)
    }

    /// Notes that the proxy acted on the settings of `generation`.
    pub(crate) fn applied(&self, generation: u64) {
        let mut inner = self.inner();
        inner.applied = inner.applied.max(generation);
    }

    /// Every listener and every connected service, with its state.
    pub fn states(&self) -> BTreeMap<String, ListenerState> {
        let inner = self.inner();
        let mut states = inner.states.clone();
        for (service, port) in &inner.configured {
            states.entry(service.clone()).or_default().configured = *port;
        }
        states
    }

    /// The state of `service`'s listener once the proxy has acted on the
    /// latest settings (or after `wait`).
    pub async fn settled(&self, service: &str, wait: std::time::Duration) -> ListenerState {
        let deadline = Instant::now() + wait;
        let wanted = self.inner().generation;
        while self.inner().applied < wanted && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.states().remove(service).unwrap_or_default()
    }

    /// Waits until the settings change.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Notes where `service` listens now, or why it cannot.
    pub(crate) fn set_listen(&self, service: &str, listen: Result<SocketAddr, String>) {
        let mut inner = self.inner();
        let state = inner.states.entry(service.to_owned()).or_default();
        match listen {
            Ok(addr) => {
                state.listen = Some(addr);
                state.problem = None;
            }
            Err(problem) => {
                state.listen = None;
                state.problem = Some(problem);
            }
        }
    }

    /// Forgets the state of every service but those of `keep`.
    pub(crate) fn retain(&self, keep: &BTreeMap<String, Vec<u16>>) {
        self.inner().states.retain(|s, _| keep.contains_key(s));
    }

    /// Notes why the last connection to `service` was refused, or (none)
    /// that it was served.
    pub(crate) fn set_refusal(&self, service: &str, problem: Option<String>) {
        if let Some(state) = self.inner().states.get_mut(service) {
            state.problem = problem;
        }
    }
}

/// The services that need a listener, each with the ports to try in
/// order: the provider's (the lowest one announced, when providers differ),
/// then the configured one.
pub fn wanted(
    snapshot: &Snapshot,
    configured: &BTreeMap<String, Option<u16>>,
) -> BTreeMap<String, Vec<u16>> {
    let mut wanted: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for remote in &snapshot.remote {
        let record = &remote.record;
        if record.protocol != ServiceProtocol::Tcp
            || (snapshot.local.contains_key(&record.name) && !configured.contains_key(&record.name))
        {
            continue;
        }
        let ports = wanted.entry(record.name.clone()).or_default();
        if let Some(port) = record.port {
            match ports.first_mut() {
                Some(first) if *first > port => *first = port,
                Some(_) => {}
                None => ports.push(port),
            }
        }
    }
    for (service, port) in configured {
        let is_http = snapshot
            .providers(service)
            .iter()
            .any(|p| p.record().protocol != ServiceProtocol::Tcp);
        let ports = match wanted.get_mut(service) {
            Some(ports) => ports,
            // A connected service that nobody announces yet listens on its
            // configured port; an HTTP one gets no listener.
            None if !is_http && port.is_some() => wanted.entry(service.clone()).or_default(),
            None => continue,
        };
        if let Some(port) = port
            && !ports.contains(port)
        {
            ports.push(*port);
        }
    }
    wanted.retain(|_, ports| !ports.is_empty());
    wanted
}

/// What to change in the listeners there are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Listeners to close.
    pub close: Vec<String>,
    /// Listeners to open, each with the ports to try in order.
    pub open: Vec<(String, Vec<u16>)>,
}

/// From the listeners `bound` (service to port) to those `wanted`: a
/// listener stays while its port is still one to try, so one that had to
/// take the configured port keeps it.
pub fn plan(bound: &BTreeMap<String, u16>, wanted: &BTreeMap<String, Vec<u16>>) -> Plan {
    let mut plan = Plan::default();
    for (service, port) in bound {
        if !wanted
            .get(service)
            .is_some_and(|ports| ports.contains(port))
        {
            plan.close.push(service.clone());
        }
    }
    for (service, ports) in wanted {
        let keeps = bound.get(service).is_some_and(|port| ports.contains(port));
        if !keeps {
            plan.open.push((service.clone(), ports.clone()));
        }
    }
    plan
}

/// The providers a new connection to `service` tries, by the HTTP rules
/// (the node's requirements and version mode, pins; no stickiness), and
/// the requirements they were chosen by.
pub fn choice<'s>(
    snapshot: &'s Snapshot,
    service: &str,
    routing: &Routing,
) -> (Result<Choice<'s>, Refusal>, Vec<Requirement>) {
    let table = routing.table();
    let settings = table.service(service);
    let requirements = choose::node_requirements(snapshot, service, settings);
    let ask = choose::Ask {
        requirements: &requirements,
        mode: settings
            .and_then(|s| s.versions)
            .unwrap_or(table.defaults.versions),
        pin: settings.and_then(|s| s.pin),
        sticky: None,
    };
    let chosen = choose::choose(snapshot, service, &ask, routing, Instant::now());
    (chosen, requirements)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_core::{LocalService, PeerId, RemoteService, record::ServiceRecord};

    use super::*;
    use crate::choose::tests_support::snapshot;

    fn announce(s: &mut Snapshot, record: ServiceRecord) {
        s.remote.push(RemoteService {
            peer: PeerId::random(),
            record,
            expires: Instant::now() + Duration::from_secs(10),
        });
    }

    fn db(port: u16) -> ServiceRecord {
        ServiceRecord::tcp("db", semver::Version::new(15, 4, 0), port)
    }

    #[test]
    fn remote_tcp_services_want_the_provider_port_then_the_configured_one() {
        let mut s = snapshot();
        announce(&mut s, db(5432));
        announce(&mut s, db(5433));
        announce(
            &mut s,
            ServiceRecord::http("api", semver::Version::new(1, 0, 0)),
        );
        let none = BTreeMap::new();
        assert_eq!(
            wanted(&s, &none),
            BTreeMap::from([("db".into(), vec![5432])])
        );
        let configured = BTreeMap::from([("db".to_owned(), Some(15432))]);
        assert_eq!(
            wanted(&s, &configured),
            BTreeMap::from([("db".into(), vec![5432, 15432])])
        );
        // The same port configured is tried once.
        let same = BTreeMap::from([("db".to_owned(), Some(5432))]);
        assert_eq!(wanted(&s, &same)["db"], vec![5432]);
    }

    #[test]
    fn connected_services_listen_before_they_appear_and_http_ones_never() {
        let mut s = snapshot();
        announce(
            &mut s,
            ServiceRecord::http("api", semver::Version::new(1, 0, 0)),
        );
        let configured = BTreeMap::from([
            ("ghost".to_owned(), Some(15999)),
            ("api".to_owned(), Some(18080)),
            ("later".to_owned(), None),
        ]);
        assert_eq!(
            wanted(&s, &configured),
            BTreeMap::from([("ghost".into(), vec![15999])])
        );
    }

    #[test]
    fn a_service_provided_here_needs_no_listener_unless_connected() {
        let mut s = snapshot();
        announce(&mut s, db(5432));
        s.local.insert(
            "db".into(),
            LocalService {
                record: db(5432),
                port: 5432,
                health: None,
                scheme: mesh_core::Scheme::Http,
            },
        );
        assert!(wanted(&s, &BTreeMap::new()).is_empty());
        let configured = BTreeMap::from([("db".to_owned(), Some(15432))]);
        assert_eq!(wanted(&s, &configured)["db"], vec![5432, 15432]);
    }

    #[test]
    fn plans_keep_listeners_on_a_port_still_wanted() {
        let bound = BTreeMap::from([
            ("db".to_owned(), 15432),
            ("gone".to_owned(), 6379),
            ("moved".to_owned(), 7000),
        ]);
        let wanted = BTreeMap::from([
            ("db".to_owned(), vec![5432, 15432]),
            ("moved".to_owned(), vec![7001]),
            ("new".to_owned(), vec![11211]),
        ]);
        assert_eq!(
            plan(&bound, &wanted),
            Plan {
                close: vec!["gone".into(), "moved".into()],
                open: vec![("moved".into(), vec![7001]), ("new".into(), vec![11211])],
            }
        );
        assert_eq!(plan(&BTreeMap::new(), &BTreeMap::new()), Plan::default());
    }

    #[test]
    fn state_shows_configured_services_and_refusals() {
        let l = Listeners::default();
        l.connect("db", Some(15432));
        l.set_listen("db", Ok("127.0.0.1:15432".parse().unwrap()));
        l.set_refusal("db", Some("no provider of db".into()));
        let state = &l.states()["db"];
        assert_eq!(state.configured, Some(15432));
        assert_eq!(state.problem.as_deref(), Some("no provider of db"));
        l.set_refusal("db", None);
        assert_eq!(l.states()["db"].problem, None);
        assert!(l.disconnect("db"));
        assert!(!l.disconnect("db"));
        l.retain(&BTreeMap::new());
        assert!(l.states().is_empty());
    }
}
