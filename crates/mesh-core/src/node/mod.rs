//! The swarm actor: one task owns the libp2p `Swarm`; a cloneable
//! [`NodeHandle`] talks to it over a bounded channel.
//!
//! [`Node::spawn`] builds the swarm and starts [`Node::run`], a `select!`
//! over the commands, the swarm's events and the timers. Every handler is
//! synchronous and returns [`Changed`]: whether what the [`Snapshot`] shows
//! changed, in which case the loop republishes it. The state is split by
//! owner: [`PeerTable`] (everything per peer) and, in `state`, `Records`
//! (the namespace, local services, the registry), `Discovery` (the
//! bootstrap list) and `Addresses`; the `impl Node` blocks are split by
//! concern: `records`, `admission`, `discovery`, `traversal`, `events` (the
//! swarm events' dispatch), `view` and `shutdown`. They use the state and
//! the loop's items; the loop uses none of theirs but the handle's.

mod admission;
mod discovery;
mod events;
mod handle;
mod links;
mod records;
mod shutdown;
mod state;
mod traversal;
mod view;

use std::{
    collections::{HashMap, VecDeque},
    ops::{BitOr, BitOrAssign},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use libp2p::{PeerId, Swarm, request_response::OutboundRequestId, swarm::ConnectionId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use self::handle::{Event, NodeHandle};
use self::{
    handle::Command,
    state::{Addresses, Discovery, Records},
};
use crate::{
    Config, Error,
    addr::group_by_peer,
    behaviour::{Behaviour, build_swarm},
    peers::PeerTable,
    snapshot::{AdmissionFailure, Role, Snapshot},
};

/// Whether a handler changed what the [`Snapshot`] shows, and how soon the
/// change must be seen.
#[must_use = "a changed view must be republished"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Changed(u8);

impl Changed {
    pub(crate) const NO: Changed = Changed(0);
    /// Figures that change all the time and that nothing acts on at once
    /// (a round-trip time, a record's new expiry): published within
    /// [`PUBLISH_LATER_EVERY`], so that a node with a hundred peers does
    /// not rebuild its view for every ping and every refreshed record.
    pub(crate) const LATER: Changed = Changed(1);
    /// Published before the loop handles anything else.
    pub(crate) const YES: Changed = Changed(2);
}

impl From<bool> for Changed {
    fn from(changed: bool) -> Self {
        if changed { Changed::YES } else { Changed::NO }
    }
}

impl BitOr for Changed {
    type Output = Changed;

    fn bitor(self, other: Changed) -> Changed {
        self.max(other)
    }
}

impl BitOrAssign for Changed {
    fn bitor_assign(&mut self, other: Changed) {
        *self = *self | other;
    }
}

/// How often members look for each other in the DHT while no other member
/// is connected, and once some are.
const FIND_MEMBERS_ALONE: Duration = Duration::from_secs(3);
const FIND_MEMBERS_EVERY: Duration = Duration::from_secs(30);
/// How often members re-advertise themselves in the DHT.
const PROVIDE_EVERY: Duration = Duration::from_secs(5 * 60);
/// How often due work (expiries, delayed disconnects, hole-punch retries)
/// is looked at.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);
/// How often changes left for later ([`Changed::LATER`]) are published.
const PUBLISH_LATER_EVERY: Duration = Duration::from_secs(2);
/// How often bootstrap peers that are not connected are dialled again.
const REDIAL_EVERY: Duration = Duration::from_secs(10);
/// How often the DHT is bootstrapped while there are peers.
const KAD_BOOTSTRAP_EVERY: Duration = Duration::from_secs(60);

/// The node's timers.
struct Timers {
    heartbeat: tokio::time::Interval,
    housekeeping: tokio::time::Interval,
    publish_later: tokio::time::Interval,
    redial: tokio::time::Interval,
    kad_bootstrap: tokio::time::Interval,
    find_members: tokio::time::Interval,
    provide: tokio::time::Interval,
    last_find: Instant,
}

impl Timers {
    fn new(heartbeat: Duration) -> Self {
        let every = |period| {
            let mut t = tokio::time::interval(period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        Self {
            heartbeat: every(heartbeat),
            housekeeping: every(HOUSEKEEPING_EVERY),
            publish_later: every(PUBLISH_LATER_EVERY),
            redial: every(REDIAL_EVERY),
            kad_bootstrap: every(KAD_BOOTSTRAP_EVERY),
            find_members: every(FIND_MEMBERS_ALONE),
            provide: every(PROVIDE_EVERY),
            last_find: Instant::now(),
        }
    }
}

/// The libp2p node. Create it with [`Node::spawn`].
pub struct Node {
    swarm: Swarm<Behaviour>,
    role: Role,
    heartbeat: Duration,
    /// The node was told to listen on loopback only (as in tests).
    loopback_only: bool,
    records: Records,
    peers: PeerTable<ConnectionId, OutboundRequestId>,
    discovery: Discovery,
    failures: VecDeque<AdmissionFailure>,
    addresses: Addresses,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, Error>>>,
    /// `connect`s waiting for the DHT to find a peer's addresses.
    pending_lookups: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, Error>>>>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
    /// Hole punches and gossip, counted for metrics.
    counters: Arc<crate::counters::Counters>,
    /// Peers whose relayed connections long-lived tunnels keep open.
    holds: Arc<crate::holds::Holds>,
    /// How many more admission challenges each peer gets answered.
    answers: crate::admission::budget::AnswerBudget<PeerId>,
    /// The sizes of the mesh of member connections.
    links: crate::peers::links::Links,
    /// This node's own random order of peers, for picking members to dial.
    shuffle: std::hash::RandomState,
}

impl Node {
    /// Builds the swarm, starts listening and spawns the event loop.
    pub fn spawn(config: Config) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), Error> {
        let swarm = build_swarm(&config)?;
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (snapshot_tx, snapshot_rx) =
            watch::channel(Arc::new(Snapshot::empty(peer_id, config.role)));
        let (events, _) = broadcast::channel(256);
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let mut node = Node {
            swarm,
            role: config.role,
            heartbeat: config.heartbeat,
            loopback_only: config.listen.iter().all(crate::addr::is_loopback),
            records: Records::new(
                config.keypair.clone(),
                config.namespace.clone(),
                config.record_ttl,
            ),
            peers: PeerTable::default(),
            discovery: Discovery::new(config.bootstrap.clone()),
            failures: VecDeque::new(),
            addresses: Addresses::default(),
            pending_dials: HashMap::new(),
            pending_lookups: HashMap::new(),
            snapshot_tx,
            events: events.clone(),
            counters: Arc::default(),
            holds: Arc::default(),
            answers: Default::default(),
            links: config.links,
            shuffle: std::hash::RandomState::new(),
        };
        node.start(&config)?;
        node.publish_snapshot();
        let handle = NodeHandle {
            commands: commands_tx,
            snapshot: snapshot_rx,
            events,
            control,
            peer_id,
            counters: node.counters.clone(),
            holds: node.holds.clone(),
        };
        let task = tokio::spawn(node.run(commands_rx));
        Ok((handle, task))
    }

    fn is_member(&self) -> bool {
        self.role == Role::Member
    }

    fn local_peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn start(&mut self, config: &Config) -> Result<(), Error> {
        if self.is_member() {
            let topic = self.records.topic();
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .map_err(Error::Subscribe)?;
        }
        for addr in &config.listen {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|source| Error::Listen {
                    addr: addr.to_string(),
                    cause: Box::new(source),
                })?;
        }
        for addr in &config.external {
            self.swarm.add_external_address(addr.clone());
        }
        for group in group_by_peer(self.discovery.bootstrap()) {
            self.dial_addrs(group, None);
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut timers = Timers::new(self.heartbeat);
        // A change to publish with the next `publish_later` tick.
        let mut later = Changed::NO;
        loop {
            let changed = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { sender }) => {
                        self.shutdown().await;
                        let _ = sender.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = timers.heartbeat.tick() => {
                    self.announce_if_providing();
                    Changed::NO
                }
                _ = timers.housekeeping.tick() => self.housekeeping(),
                _ = timers.publish_later.tick() => Changed::from(later != Changed::NO),
                _ = timers.redial.tick() => {
                    self.redial_bootstrap();
                    Changed::NO
                }
                _ = timers.kad_bootstrap.tick() => {
                    // A bounded mesh leaves the DHT alone: each query
                    // dials peers, and each dial is a link to trim.
                    if !self.peers.is_empty() && !self.bounded() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                    Changed::NO
                }
                _ = timers.find_members.tick() => {
                    self.on_find_members_tick(&mut timers.last_find);
                    Changed::NO
                }
                _ = timers.provide.tick() => {
                    self.provide();
                    Changed::NO
                }
            };
            if changed == Changed::YES {
                self.publish_snapshot();
                later = Changed::NO;
            } else {
                later |= changed;
            }
        }
    }

    /// Quick lookups only in the minute after joining or meeting a relay,
    /// and only while no member is connected: a newcomer finds the others;
    /// the others need not look.
    fn on_find_members_tick(&mut self, last_find: &mut Instant) {
        let alone = !self.peers.any_member();
        let fast = alone && Instant::now() < self.discovery.find_fast_until();
        if fast || last_find.elapsed() >= FIND_MEMBERS_EVERY {
            *last_find = Instant::now();
            self.find_members();
        }
    }

    fn housekeeping(&mut self) -> Changed {
        let now = Instant::now();
        let gone = self.records.expire(now);
        for peer in &gone {
            tracing::info!(%peer, "service records expired");
        }
        let holds = &self.holds;
        let due = self.peers.take_due(now, |peer| holds.held(peer));
        for peer in due.disconnect {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        for (peer, conn) in due.close {
            tracing::debug!(%peer, "closing the relayed connection; the direct one carries the tunnels");
            self.swarm.close_connection(conn);
        }
        for peer in due.punch {
            self.punch_again(peer);
        }
        self.trim_links();
        self.top_up_links();
        for (peer, conn) in due.silent {
            tracing::info!(%peer, "the connection answered no ping for {:?}; closing it", crate::peers::SILENT_AFTER);
            self.swarm.close_connection(conn);
        }
        for (peer, mut addrs) in due.redial {
            // A member behind a NAT is only reachable through a relay.
            if !self.discovery.is_bootstrap(&peer) {
                addrs.extend(self.circuits_to(peer));
            }
            if !addrs.is_empty() {
                self.redial(peer, addrs);
            }
        }
        Changed::from(!gone.is_empty())
    }

    fn on_command(&mut self, cmd: Command) -> Changed {
        match cmd {
            Command::Register { service, sender } => {
                let (result, changed) = self.register(service);
                let _ = sender.send(result);
                changed
            }
            Command::Unregister { name, sender } => {
                let (existed, changed) = self.unregister(&name);
                let _ = sender.send(existed);
                changed
            }
            Command::SetHealth { report, sender } => {
                let (applied, changed) = self.set_health(report);
                let _ = sender.send(applied);
                changed
            }
            Command::Dial { addrs, sender } => {
                self.dial_addrs(addrs, Some(sender));
                Changed::NO
            }
            Command::Connect { peer, sender } => {
                self.connect(peer, sender);
                Changed::NO
            }
            Command::Join {
                namespace,
                bootstrap,
                sender,
            } => {
                let changed = self.join(namespace, bootstrap);
                let _ = sender.send(());
                changed
            }
            Command::AddBootstrap { addrs, sender } => {
                let changed = self.add_bootstrap(addrs);
                let _ = sender.send(());
                changed
            }
            Command::Shutdown { sender } => {
                // Handled by the loop before it gets here.
                let _ = sender.send(());
                Changed::NO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{state::test_service as service, *};
    use crate::{
        health::{HealthCheck, Probe, Report},
        namespace::Namespace,
        record::Health,
    };

    fn report(port: u16, check: &HealthCheck, health: Health, failure: Option<&str>) -> Report {
        Report {
            service: "api".into(),
            port,
            check: check.clone(),
            health,
            last_failure: failure.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn health_reports_apply_only_to_the_service_they_checked() {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let mut config = Config::new(keypair, Namespace::new("team", None));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.mdns = false;
        let (node, _task) = Node::spawn(config).unwrap();
        let check = HealthCheck::new(Probe::Path("/healthz".into()));
        let health = |node: &NodeHandle| node.snapshot().local["api"].record.health;

        node.register(service(3000, Some(check.clone())))
            .await
            .unwrap();
        assert_eq!(health(&node), Health::Unknown);
        let sick = report(3000, &check, Health::Unhealthy, Some("GET /healthz: 500"));
        assert!(node.set_health(sick).await.unwrap());
        assert_eq!(health(&node), Health::Unhealthy);
        assert_eq!(node.snapshot().health_failures["api"], "GET /healthz: 500");

        // Registered again with the same port and check: health kept.
        node.register(service(3000, Some(check.clone())))
            .await
            .unwrap();
        assert_eq!(health(&node), Health::Unhealthy);

        // Another port: a report of the old one is refused, health restarts.
        node.register(service(3001, Some(check.clone())))
            .await
            .unwrap();
        assert_eq!(health(&node), Health::Unknown);
        assert!(node.snapshot().health_failures.is_empty());
        let old = report(3000, &check, Health::Healthy, None);
        assert!(!node.set_health(old).await.unwrap());
        assert_eq!(health(&node), Health::Unknown);

        // Without a check the health stays unknown, whatever the caller says.
        let mut unchecked = service(3001, None);
        unchecked.record.health = Health::Healthy;
        node.register(unchecked).await.unwrap();
        assert_eq!(health(&node), Health::Unknown);
        assert!(
            !node
                .set_health(report(3001, &check, Health::Healthy, None))
                .await
                .unwrap()
        );

        // Withdrawn: refused.
        node.unregister("api").await.unwrap();
        assert!(
            !node
                .set_health(report(3001, &check, Health::Healthy, None))
                .await
                .unwrap()
        );
        node.shutdown().await;
    }
}
