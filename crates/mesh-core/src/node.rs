//! The swarm actor: one task owns the libp2p `Swarm`; a cloneable
//! [`NodeHandle`] talks to it over a bounded channel.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat,
    core::transport::ListenerId,
    gossipsub, identify,
    identity::Keypair,
    kad, mdns,
    multiaddr::Protocol,
    ping, relay,
    request_response::{self, OutboundRequestId},
    swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::{
    Error,
    admission::{self, AuthRequest, AuthResponse, PeerKind},
    behaviour::{Behaviour, BehaviourEvent, RELAY_HOP_PROTOCOL, build_swarm},
    health,
    namespace::Namespace,
    record::{Announcement, FORMAT_VERSION, Health},
    registry::{Outcome, Registry},
    snapshot::{
        AdmissionFailure, LocalService, PeerLink, Reachability, RelayLink, RemoteService,
        Reservation, Role, Snapshot,
    },
};

/// How long a peer in another namespace (or with a wrong secret) is left
/// alone before discovery may dial it again.
const FOREIGN_BACKOFF: Duration = Duration::from_secs(60);
/// How long a rejected peer stays connected so it can read our answer.
const REJECT_GRACE: Duration = Duration::from_secs(1);
/// Hole-punch rounds tried per peer (the first comes with the relayed
/// connection; each retry opens another relayed connection to run DCUtR on).
const PUNCH_ATTEMPTS: u32 = 3;
/// How long a relayed connection stays open once a direct one exists.
const RELAYED_GRACE: Duration = Duration::from_secs(3);
/// Admission failures kept for `status` and `doctor`.
const MAX_FAILURES: usize = 8;
/// How often members look for each other in the DHT while no other member
/// is connected, and once some are.
const FIND_MEMBERS_ALONE: Duration = Duration::from_secs(3);
const FIND_MEMBERS_EVERY: Duration = Duration::from_secs(30);
/// How long after joining or meeting a relay the quick lookups go on.
const FIND_FAST_FOR: Duration = Duration::from_secs(60);
/// How often members re-advertise themselves in the DHT.
const PROVIDE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Settings of a [`Node`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The node identity.
    pub keypair: Keypair,
    /// Member of a namespace, or relay for all.
    pub role: Role,
    /// Namespace to join (ignored by a relay).
    pub namespace: Namespace,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever the connection is lost.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses others reach this node at, known in advance (a relay's
    /// public address behind a cloud NAT, for example).
    pub external: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// How often the node re-announces its services.
    pub heartbeat: Duration,
    /// TTL put in the node's announcements.
    pub record_ttl: Duration,
    /// How long an unused connection stays open.
    pub idle_timeout: Duration,
    /// Agent string reported through identify.
    pub agent: String,
}

impl Config {
    /// Defaults for everything but identity and namespace.
    pub fn new(keypair: Keypair, namespace: Namespace) -> Self {
        Self {
            keypair,
            role: Role::Member,
            namespace,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: true,
            heartbeat: Duration::from_secs(3),
            record_ttl: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            agent: format!("devmesh/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Something that happened on the node, for observers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A first connection to a peer opened.
    PeerConnected {
        peer: PeerId,
        addr: Multiaddr,
        relayed: bool,
    },
    /// The last connection to a peer closed.
    PeerDisconnected { peer: PeerId },
    /// A peer proved it is a member of the namespace.
    PeerAdmitted { peer: PeerId },
    /// A peer failed the admission handshake.
    AdmissionFailed { peer: PeerId, reason: String },
    /// The set of known services changed.
    ServicesChanged,
    /// A record from the network was dropped.
    RecordRejected { from: PeerId, reason: String },
}

/// Request of the record-table sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Format version.
    pub v: u32,
}

/// Response of the record-table sync: every live announcement known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Sealed, signed announcements with their remaining lifetime.
    pub entries: Vec<SyncEntry>,
}

/// One announcement in a [`SyncResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncEntry {
    /// Signed envelope sealed with the namespace's record key.
    pub sealed: Vec<u8>,
    /// Milliseconds the sender still considers it valid.
    pub remaining_ms: u64,
}

enum Command {
    Register(LocalService, oneshot::Sender<Result<(), Error>>),
    Unregister(String, oneshot::Sender<bool>),
    SetHealth(health::Report, oneshot::Sender<bool>),
    Dial(Vec<Multiaddr>, oneshot::Sender<Result<PeerId, Error>>),
    Join(Namespace, Vec<Multiaddr>, oneshot::Sender<()>),
    AddBootstrap(Vec<Multiaddr>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
    control: libp2p_stream::Control,
    peer_id: PeerId,
}

impl NodeHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The current view of the mesh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver notified on every change of the view.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Subscribes to node events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The data-plane stream control; opening streams skips the event loop.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Starts providing a service and announces it. Replaces a service of
    /// the same name.
    pub async fn register(&self, service: LocalService) -> Result<(), Error> {
        service.record.validate()?;
        self.call(|tx| Command::Register(service, tx)).await?
    }

    /// Stops providing a service. Returns whether it was provided.
    pub async fn unregister(&self, name: &str) -> Result<bool, Error> {
        self.call(|tx| Command::Unregister(name.to_owned(), tx))
            .await
    }

    /// Applies a health checker's report: when `report.service` is still
    /// provided from the same port with the same check, its record takes
    /// the reported health (a change is announced at once, with a new
    /// sequence number) and its last failure is kept for `status`. Returns
    /// whether the report applied; `false` means the service was withdrawn
    /// or replaced and the checker should stop.
    pub async fn set_health(&self, report: health::Report) -> Result<bool, Error> {
        self.call(|tx| Command::SetHealth(report, tx)).await
    }

    /// Connects to a peer and waits until the connection is established.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|tx| Command::Dial(vec![addr], tx)).await?
    }

    /// Connects to one peer at any of `addrs` (all ending in the same
    /// `/p2p/<id>`), tried at once; the first that works wins.
    pub async fn dial_any(&self, addrs: Vec<Multiaddr>) -> Result<PeerId, Error> {
        self.call(|tx| Command::Dial(addrs, tx)).await?
    }

    /// Moves the node to another namespace (or the same one with another
    /// secret): forgets every record, closes the connections to members of
    /// the old one, adds `bootstrap` to the bootstrap peers (dialled by the
    /// next redial, or by [`NodeHandle::dial`]) and looks for the new
    /// namespace's members. Local services are announced there.
    pub async fn join(&self, namespace: Namespace, bootstrap: Vec<Multiaddr>) -> Result<(), Error> {
        self.call(|tx| Command::Join(namespace, bootstrap, tx))
            .await
    }

    /// Adds bootstrap peers (kept and redialled like configured ones) and
    /// dials those not connected.
    pub async fn add_bootstrap(&self, addrs: Vec<Multiaddr>) -> Result<(), Error> {
        self.call(|tx| Command::AddBootstrap(addrs, tx)).await
    }

    /// Withdraws every service, tells the peers and stops the node.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }
}

#[derive(Debug, Clone)]
struct Conn {
    addr: Multiaddr,
    relayed: bool,
    dialer: bool,
}

#[derive(Debug)]
struct PeerState {
    conns: HashMap<ConnectionId, Conn>,
    rtt: Option<Duration>,
    agent: Option<String>,
    kind: PeerKind,
    /// The challenge sent to the peer, until its answer arrives.
    challenge: Option<(OutboundRequestId, Vec<u8>)>,
    /// Challenges sent so far (one may be lost with a duplicate connection).
    challenges_sent: u8,
}

impl PeerState {
    fn new(kind: PeerKind) -> Self {
        Self {
            conns: HashMap::new(),
            rtt: None,
            agent: None,
            kind,
            challenge: None,
            challenges_sent: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Punch {
    rounds: u32,
    retry_at: Option<Instant>,
    extra: Option<ConnectionId>,
}

#[derive(Debug)]
struct RelayState {
    addr: Multiaddr,
    listener: Option<ListenerId>,
    reservation: Reservation,
}

/// The libp2p node. Create it with [`Node::spawn`].
pub struct Node {
    swarm: Swarm<Behaviour>,
    config: Config,
    topic: gossipsub::IdentTopic,
    registry: Registry,
    local: BTreeMap<String, LocalService>,
    health_failures: BTreeMap<String, String>,
    peers: HashMap<PeerId, PeerState>,
    relays: HashMap<PeerId, RelayState>,
    /// Peers not to dial again before the instant.
    foreign: HashMap<PeerId, Instant>,
    /// Peers to disconnect at the instant.
    to_disconnect: Vec<(PeerId, Instant)>,
    /// Peers whose relayed connections close at the instant.
    close_relayed: Vec<(PeerId, Instant)>,
    /// Until when members are looked up every few seconds while alone.
    find_fast_until: Instant,
    /// Members found in the DHT being dialled.
    member_dials: HashSet<PeerId>,
    /// Members found in the DHT that could not be reached: not dialled again
    /// before the instant; the duration is the current back-off. Stale
    /// rendezvous entries of members that left must not make a node hammer
    /// the relay.
    unreachable: HashMap<PeerId, (Instant, Duration)>,
    /// Failed hole punches: rounds so far, the next retry, and the extra
    /// relayed connection opened for the current retry.
    punches: HashMap<PeerId, Punch>,
    failures: VecDeque<AdmissionFailure>,
    listen_addrs: Vec<Multiaddr>,
    observed_addrs: Vec<Multiaddr>,
    reachability: Reachability,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, Error>>>,
    seq: u64,
    dirty: bool,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
}

impl Node {
    /// Builds the swarm, starts listening and spawns the event loop.
    pub fn spawn(config: Config) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), Error> {
        let swarm = build_swarm(&config)?;
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let topic = gossipsub::IdentTopic::new(config.namespace.topic());
        let snapshot = Arc::new(Snapshot {
            local_peer: peer_id,
            role: config.role,
            namespace: String::new(),
            has_secret: false,
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            observed_addrs: Vec::new(),
            reachability: Reachability::Unknown,
            relays: Vec::new(),
            bootstrap: Vec::new(),
            admission_failures: Vec::new(),
            local: BTreeMap::new(),
            health_failures: BTreeMap::new(),
            remote: Vec::new(),
            peers: BTreeMap::new(),
        });
        let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
        let (events, _) = broadcast::channel(256);
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let mut node = Node {
            swarm,
            topic,
            registry: Registry::default(),
            local: BTreeMap::new(),
            health_failures: BTreeMap::new(),
            peers: HashMap::new(),
            relays: HashMap::new(),
            foreign: HashMap::new(),
            to_disconnect: Vec::new(),
            close_relayed: Vec::new(),
            find_fast_until: Instant::now(),
            member_dials: HashSet::new(),
            unreachable: HashMap::new(),
            punches: HashMap::new(),
            failures: VecDeque::new(),
            listen_addrs: Vec::new(),
            observed_addrs: Vec::new(),
            reachability: Reachability::Unknown,
            pending_dials: HashMap::new(),
            seq: 0,
            dirty: true,
            snapshot_tx,
            events: events.clone(),
            config,
        };
        node.start()?;
        node.publish_snapshot();
        let handle = NodeHandle {
            commands: commands_tx,
            snapshot: snapshot_rx,
            events,
            control,
            peer_id,
        };
        let task = tokio::spawn(node.run(commands_rx));
        Ok((handle, task))
    }

    fn is_member(&self) -> bool {
        self.config.role == Role::Member
    }

    fn start(&mut self) -> Result<(), Error> {
        if self.is_member() {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&self.topic)
                .map_err(|e| Error::Setup(format!("subscribing to records topic: {e}")))?;
        }
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        for addr in self.config.external.clone() {
            self.swarm.add_external_address(addr);
        }
        for group in group_by_peer(&self.config.bootstrap) {
            self.dial_addrs(group, None);
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        let mut redial = tokio::time::interval(Duration::from_secs(10));
        let mut kad_bootstrap = tokio::time::interval(Duration::from_secs(60));
        let mut find_members = tokio::time::interval(FIND_MEMBERS_ALONE);
        let mut last_find = Instant::now();
        let mut provide = tokio::time::interval(PROVIDE_EVERY);
        for t in [
            &mut heartbeat,
            &mut housekeeping,
            &mut redial,
            &mut kad_bootstrap,
            &mut find_members,
            &mut provide,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = heartbeat.tick() => {
                    if !self.local.is_empty() {
                        self.announce();
                    }
                }
                _ = housekeeping.tick() => self.housekeeping(),
                _ = redial.tick() => self.redial_bootstrap(),
                _ = kad_bootstrap.tick() => {
                    if !self.peers.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                _ = find_members.tick() => {
                    // Quick lookups only in the minute after joining or
                    // meeting a relay, and only while no member is connected:
                    // a newcomer finds the others; the others need not look.
                    let alone = !self.peers.values().any(|p| p.kind == PeerKind::Member);
                    let fast = alone && Instant::now() < self.find_fast_until;
                    if fast || last_find.elapsed() >= FIND_MEMBERS_EVERY {
                        last_find = Instant::now();
                        self.find_members();
                    }
                }
                _ = provide.tick() => self.provide(),
            }
            if self.dirty {
                self.publish_snapshot();
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let gone = self.registry.expire(now);
        for peer in gone {
            info!(%peer, "service records expired");
            self.dirty = true;
        }
        for peer in take_due(&mut self.to_disconnect, now) {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.foreign.retain(|_, until| *until > now);
        self.unreachable
            .retain(|_, (until, _)| *until + Duration::from_secs(600) > now);
        self.retry_punches(now);
        for peer in take_due(&mut self.close_relayed, now) {
            let Some(state) = self.peers.get(&peer) else {
                continue;
            };
            if !state.conns.values().any(|c| !c.relayed) {
                continue;
            }
            let relayed: Vec<ConnectionId> = state
                .conns
                .iter()
                .filter(|(_, c)| c.relayed)
                .map(|(id, _)| *id)
                .collect();
            for conn in relayed {
                debug!(%peer, "closing the relayed connection; the direct one carries the tunnels");
                self.swarm.close_connection(conn);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Register(mut service, reply) => {
                let name = service.record.name.clone();
                info!(service = %name, version = %service.record.version, port = service.port, "providing service");
                // Health comes from the checks: a service registered again
                // with the same backend and check keeps what they found;
                // otherwise it starts unknown.
                let kept = self
                    .local
                    .get(&name)
                    .filter(|old| {
                        service.health.is_some()
                            && old.port == service.port
                            && old.health == service.health
                    })
                    .map(|old| old.record.health);
                service.record.health = kept.unwrap_or(Health::Unknown);
                if kept.is_none() {
                    self.health_failures.remove(&name);
                }
                self.local.insert(name, service);
                self.dirty = true;
                self.announce();
                let _ = reply.send(Ok(()));
            }
            Command::Unregister(name, reply) => {
                let existed = self.local.remove(&name).is_some();
                self.health_failures.remove(&name);
                if existed {
                    info!(service = %name, "withdrawing service");
                    self.dirty = true;
                    self.announce();
                }
                let _ = reply.send(existed);
            }
            Command::SetHealth(report, reply) => {
                let applied = self.set_health(report);
                let _ = reply.send(applied);
            }
            Command::Dial(addrs, reply) => self.dial_addrs(addrs, Some(reply)),
            Command::Join(namespace, bootstrap, reply) => {
                self.join(namespace, bootstrap);
                let _ = reply.send(());
            }
            Command::AddBootstrap(addrs, reply) => {
                for addr in addrs {
                    if !self.config.bootstrap.contains(&addr) {
                        self.config.bootstrap.push(addr);
                        self.dirty = true;
                    }
                }
                self.redial_bootstrap();
                let _ = reply.send(());
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    /// See [`NodeHandle::set_health`].
    fn set_health(&mut self, report: health::Report) -> bool {
        let Some(service) = self.local.get_mut(&report.service) else {
            return false;
        };
        if service.port != report.port || service.health.as_ref() != Some(&report.check) {
            return false;
        }
        if let Some(failure) = report.last_failure
            && self.health_failures.get(&report.service) != Some(&failure)
        {
            self.health_failures.insert(report.service.clone(), failure);
            self.dirty = true;
        }
        if service.record.health != report.health {
            debug!(service = %report.service, health = %report.health, "announcing a new health");
            service.record.health = report.health;
            self.dirty = true;
            self.announce();
        }
        true
    }

    /// Switches to another namespace: see [`NodeHandle::join`].
    fn join(&mut self, namespace: Namespace, bootstrap: Vec<Multiaddr>) {
        info!(namespace = %namespace.name(), secret = namespace.has_secret(), "joining namespace");
        if self.is_member() {
            // Tell the old namespace our services are gone before leaving it.
            if !self.local.is_empty() {
                let saved = std::mem::take(&mut self.local);
                self.announce();
                self.local = saved;
            }
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .unsubscribe(&self.topic);
            let old_key = kad::RecordKey::new(&self.config.namespace.rendezvous_key());
            self.swarm.behaviour_mut().kad.stop_providing(&old_key);
            self.topic = gossipsub::IdentTopic::new(namespace.topic());
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&self.topic) {
                warn!(error = %e, "subscribing to the new records topic failed");
            }
        }
        self.config.namespace = namespace;
        self.registry.clear();
        self.failures.clear();
        self.foreign.clear();
        let _ = self.events.send(Event::ServicesChanged);
        // Members of the old namespace: disconnect. Relays stay.
        let members: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.kind != PeerKind::Relay)
            .map(|(id, _)| *id)
            .collect();
        for peer in members {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        for addr in bootstrap {
            if !self.config.bootstrap.contains(&addr) {
                self.config.bootstrap.push(addr);
            }
        }
        self.find_fast_until = Instant::now() + FIND_FAST_FOR;
        self.provide();
        self.find_members();
        self.dirty = true;
    }

    /// Dials `addrs`: one address of an unknown peer, or any number of
    /// addresses of the same peer, tried concurrently.
    fn dial_addrs(
        &mut self,
        addrs: Vec<Multiaddr>,
        reply: Option<oneshot::Sender<Result<PeerId, Error>>>,
    ) {
        let Some(first) = addrs.first().cloned() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::Dial {
                    addr: String::new(),
                    reason: "no address given".into(),
                }));
            }
            return;
        };
        let peer = peer_of(&first);
        let opts = match peer {
            Some(peer) => DialOpts::peer_id(peer).addresses(addrs.clone()).build(),
            None => DialOpts::unknown_peer_id().address(first.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                debug!(?addrs, "dialling");
                if let Some(reply) = reply {
                    self.pending_dials.insert(id, reply);
                }
            }
            Err(e) => {
                // Already connected counts as success for the caller.
                if let Some(peer) = peer
                    && self.swarm.is_connected(&peer)
                {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(peer));
                    }
                    return;
                }
                debug!(?addrs, error = %e, "dial not started");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::Dial {
                        addr: first.to_string(),
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }

    fn redial_bootstrap(&mut self) {
        for group in group_by_peer(&self.config.bootstrap) {
            let connected = match group.first().and_then(peer_of) {
                Some(peer) => self.swarm.is_connected(&peer) || self.foreign.contains_key(&peer),
                None => self
                    .peers
                    .values()
                    .any(|p| p.conns.values().any(|c| group.contains(&c.addr))),
            };
            if !connected {
                self.dial_addrs(group, None);
            }
        }
    }

    /// Advertises this node as a member under the namespace's rendezvous key.
    fn provide(&mut self) {
        if !self.is_member() || self.relays.is_empty() {
            return;
        }
        let key = kad::RecordKey::new(&self.config.namespace.rendezvous_key());
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
            debug!(error = %e, "cannot advertise membership in the DHT");
        }
    }

    /// Asks the DHT for the namespace's members.
    fn find_members(&mut self) {
        if !self.is_member() || self.relays.is_empty() {
            return;
        }
        let key = kad::RecordKey::new(&self.config.namespace.rendezvous_key());
        self.swarm.behaviour_mut().kad.get_providers(key);
    }

    /// Dials a member found in the DHT: through every relay we know, and at
    /// the addresses the DHT has; the first connection that works wins.
    fn dial_member(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.foreign.contains_key(&peer)
            || self
                .unreachable
                .get(&peer)
                .is_some_and(|(until, _)| *until > Instant::now())
        {
            return;
        }
        self.member_dials.insert(peer);
        let circuits = self.circuits_to(peer);
        debug!(%peer, ?circuits, "dialling a member found in the DHT");
        let _ = self.swarm.dial(
            DialOpts::peer_id(peer)
                .addresses(circuits)
                .extend_addresses_through_behaviour()
                .build(),
        );
    }

    /// After a failed hole punch, try again later on a fresh relayed
    /// connection (timing under load or latency can defeat one round); the
    /// relayed path keeps working meanwhile. Only the peer with the smaller
    /// id retries, so the two sides do not both dial.
    fn punch_failed(&mut self, peer: PeerId, error: String) {
        let punch = self.punches.entry(peer).or_default();
        punch.rounds += 1;
        if let Some(extra) = punch.extra.take() {
            self.swarm.close_connection(extra);
        }
        let retry = punch.rounds < PUNCH_ATTEMPTS && *self.swarm.local_peer_id() < peer;
        if retry {
            let backoff = Duration::from_secs(2u64.pow(punch.rounds));
            punch.retry_at = Some(Instant::now() + backoff);
            info!(%peer, %error, round = punch.rounds, "hole punch failed; staying on the relay and trying again in {backoff:?}");
        } else {
            info!(%peer, %error, round = punch.rounds, "hole punch failed; staying on the relay");
        }
    }

    fn retry_punches(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .punches
            .iter()
            .filter(|(_, p)| p.retry_at.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let relayed_only = self
                .peers
                .get(&peer)
                .is_some_and(|p| !p.conns.is_empty() && p.conns.values().all(|c| c.relayed));
            let circuits = self.circuits_to(peer);
            let Some(punch) = self.punches.get_mut(&peer) else {
                continue;
            };
            punch.retry_at = None;
            if !relayed_only || circuits.is_empty() {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                .addresses(circuits)
                .build();
            punch.extra = Some(opts.connection_id());
            debug!(%peer, "another relayed connection for another hole punch");
            let _ = self.swarm.dial(opts);
        }
    }

    /// Addresses reaching `peer` through each relay this node uses.
    fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .map(|(relay, r)| {
                r.addr
                    .clone()
                    .with(Protocol::P2p(*relay))
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(peer))
            })
            .collect()
    }

    fn next_seq(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.seq = now.max(self.seq + 1);
        self.seq
    }

    /// This node's announcement, signed and sealed for the namespace.
    fn own_announcement(&mut self) -> Option<Vec<u8>> {
        let announcement = Announcement {
            v: FORMAT_VERSION,
            namespace: self.config.namespace.name().to_owned(),
            provider: *self.swarm.local_peer_id(),
            seq: self.next_seq(),
            ttl_secs: self.config.record_ttl.as_secs().max(1) as u32,
            services: self.local.values().map(|s| s.record.clone()).collect(),
        };
        match announcement.sign(&self.config.keypair) {
            Ok(bytes) => Some(self.config.namespace.seal(&bytes)),
            Err(e) => {
                warn!(error = %e, "cannot sign own announcement");
                None
            }
        }
    }

    fn announce(&mut self) {
        if !self.is_member() {
            return;
        }
        let Some(bytes) = self.own_announcement() else {
            return;
        };
        let topic = self.topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!("no subscribed peers yet; they get the records by sync on connect");
            }
            Err(e) => debug!(error = %e, "publishing announcement failed"),
        }
    }

    async fn shutdown(&mut self) {
        info!("shutting down: withdrawing services");
        let had_services = !self.local.is_empty();
        self.local.clear();
        if had_services {
            self.announce();
        }
        // Give the withdrawal a moment to leave, then close every connection.
        let deadline =
            tokio::time::sleep(Duration::from_millis(if had_services { 300 } else { 0 }));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let close = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(close);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = &mut close => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
    }

    fn kind_of(&self, peer: &PeerId) -> PeerKind {
        self.peers
            .get(peer)
            .map(|p| p.kind)
            .unwrap_or(PeerKind::Pending)
    }

    /// Opens, verifies and applies a sealed announcement received from
    /// `from`, an admitted member. When it came by gossip, `author` is the
    /// authenticated publisher, which must be the provider the record
    /// describes.
    fn accept_announcement(
        &mut self,
        sealed: &[u8],
        from: PeerId,
        ttl: Duration,
        author: Option<PeerId>,
    ) -> Result<(), String> {
        if self.kind_of(&from) != PeerKind::Member {
            return Err(format!(
                "record from a peer that is not an admitted member ({})",
                self.kind_of(&from)
            ));
        }
        let bytes = self
            .config
            .namespace
            .open(sealed)
            .map_err(|e| e.to_string())?;
        let announcement = Announcement::verify(&bytes, self.config.namespace.name())
            .map_err(|e| e.to_string())?;
        if let Some(author) = author
            && author != announcement.provider
        {
            return Err(format!(
                "record of {} published by {author}",
                announcement.provider
            ));
        }
        if announcement.provider == *self.swarm.local_peer_id() {
            return Ok(());
        }
        let provider = announcement.provider;
        let services: Vec<String> = announcement
            .services
            .iter()
            .map(|s| format!("{}@{}", s.name, s.version))
            .collect();
        match self
            .registry
            .insert(announcement, bytes, ttl, Instant::now())
        {
            Outcome::Changed => {
                info!(%provider, via = %from, services = ?services, "service records updated");
                self.dirty = true;
                let _ = self.events.send(Event::ServicesChanged);
                if !services.is_empty() && !self.swarm.is_connected(&provider) {
                    // Learned through another member: find the provider's
                    // addresses in the DHT so tunnels can reach it.
                    debug!(%provider, "looking up a provider we are not connected to");
                    self.swarm.behaviour_mut().kad.get_closest_peers(provider);
                    self.dial_member(provider);
                }
            }
            Outcome::Refreshed => self.dirty = true,
            Outcome::Stale => debug!(%provider, "ignoring stale or replayed announcement"),
        }
        Ok(())
    }

    fn reject(&self, from: PeerId, reason: String) {
        warn!(peer = %from, %reason, "dropped malformed or invalid record");
        let _ = self.events.send(Event::RecordRejected { from, reason });
    }

    /// Starts the admission handshake with a newly connected peer.
    fn challenge(&mut self, peer: PeerId) {
        let mut nonce = vec![0u8; admission::NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let request = AuthRequest {
            v: 1,
            namespace_id: self.config.namespace.id().to_vec(),
            nonce: nonce.clone(),
        };
        let id = self.swarm.behaviour_mut().auth.send_request(&peer, request);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.challenge = Some((id, nonce));
            state.challenges_sent += 1;
        }
    }

    fn on_auth_request(&mut self, peer: PeerId, request: AuthRequest) -> AuthResponse {
        if !self.is_member() {
            return AuthResponse::Relay;
        }
        if request.v != 1
            || request.nonce.len() != admission::NONCE_LEN
            || request.namespace_id.len() != 16
        {
            warn!(%peer, "dropped a malformed admission request");
            return AuthResponse::Malformed;
        }
        if request.namespace_id != self.config.namespace.id() {
            debug!(%peer, "admission request for another namespace");
            return AuthResponse::OtherNamespace;
        }
        let proof = self
            .config
            .namespace
            .proof(&request.nonce, self.swarm.local_peer_id(), &peer);
        AuthResponse::Member {
            proof: proof.to_vec(),
        }
    }

    fn on_auth_response(&mut self, peer: PeerId, id: OutboundRequestId, response: AuthResponse) {
        let me = *self.swarm.local_peer_id();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let nonce = match state.challenge.take() {
            Some((sent, nonce)) if sent == id => nonce,
            other => {
                state.challenge = other;
                return;
            }
        };
        let name = self.config.namespace.name().to_owned();
        match response {
            AuthResponse::Member { proof } => {
                if self
                    .config
                    .namespace
                    .verify_proof(&nonce, &peer, &me, &proof)
                {
                    state.kind = PeerKind::Member;
                    info!(%peer, namespace = %name, "peer admitted as a member");
                    self.swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, SyncRequest { v: 1 });
                    let _ = self.events.send(Event::PeerAdmitted { peer });
                    // The peer's gossip subscription may have arrived before
                    // it was admitted; make sure it hears us now.
                    if !self.local.is_empty() {
                        self.announce();
                    }
                } else {
                    state.kind = PeerKind::Rejected;
                    let reason = if self.config.namespace.has_secret() {
                        format!(
                            "secret does not match namespace {name}: peer {peer} is a member with a different secret. Ask a member for a fresh invite (`devmesh invite`) and run `devmesh join <token>`"
                        )
                    } else {
                        format!(
                            "namespace {name} has a secret and this node has none: peer {peer} proved a secret. Ask a member for an invite (`devmesh invite`) and run `devmesh join <token>`"
                        )
                    };
                    self.admission_failed(peer, reason);
                }
            }
            AuthResponse::Relay => {
                state.kind = PeerKind::Relay;
                debug!(%peer, "peer is a relay");
            }
            AuthResponse::OtherNamespace => {
                state.kind = PeerKind::Foreign;
                info!(%peer, "peer is in another namespace; disconnecting");
                self.foreign.insert(peer, Instant::now() + FOREIGN_BACKOFF);
                self.to_disconnect
                    .push((peer, Instant::now() + REJECT_GRACE));
            }
            AuthResponse::Malformed => {
                state.kind = PeerKind::Rejected;
                self.admission_failed(
                    peer,
                    format!("peer {peer} could not read our admission request (another devmesh version?)"),
                );
            }
        }
        self.dirty = true;
    }

    fn admission_failed(&mut self, peer: PeerId, reason: String) {
        warn!(%peer, %reason, "admission failed; disconnecting");
        self.failures.retain(|f| f.peer != peer);
        self.failures.push_back(AdmissionFailure {
            peer,
            reason: reason.clone(),
        });
        while self.failures.len() > MAX_FAILURES {
            self.failures.pop_front();
        }
        self.foreign.insert(peer, Instant::now() + FOREIGN_BACKOFF);
        self.to_disconnect
            .push((peer, Instant::now() + REJECT_GRACE));
        let _ = self.events.send(Event::AdmissionFailed { peer, reason });
        self.dirty = true;
    }

    /// Listens through a relay so that peers can reach this node through it.
    fn use_relay(&mut self, relay: PeerId) {
        if !self.is_member() || self.relays.contains_key(&relay) {
            return;
        }
        let Some(addr) = self.peers.get(&relay).and_then(|p| {
            p.conns
                .values()
                .filter(|c| !c.relayed)
                .max_by_key(|c| c.dialer)
                .map(|c| c.addr.clone())
        }) else {
            return;
        };
        // Hole punching needs an observed address of each transport it may
        // punch with; identify reports one per connection. Connect to the
        // relay over the transports not used yet, as far as its bootstrap
        // addresses offer them.
        let used: Vec<bool> = self
            .peers
            .get(&relay)
            .map(|p| p.conns.values().map(|c| is_quic(&c.addr)).collect())
            .unwrap_or_default();
        let others: Vec<Multiaddr> = self
            .config
            .bootstrap
            .iter()
            .filter(|a| peer_of(a) == Some(relay) && !used.contains(&is_quic(a)))
            .cloned()
            .collect();
        for other in others {
            debug!(%relay, addr = %other, "second connection to the relay, for a hole-punching address on its transport");
            let _ = self.swarm.dial(
                DialOpts::peer_id(relay)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .addresses(vec![other])
                    .build(),
            );
        }
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let circuit = addr
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        let listener = match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                info!(%relay, %circuit, "asking the relay for a reservation");
                Some(id)
            }
            Err(e) => {
                warn!(%relay, error = %e, "cannot listen through the relay");
                None
            }
        };
        let reservation = if listener.is_some() {
            Reservation::Pending
        } else {
            Reservation::Failed("cannot listen through the relay".into())
        };
        self.relays.insert(
            relay,
            RelayState {
                addr,
                listener,
                reservation,
            },
        );
        self.find_fast_until = Instant::now() + FIND_FAST_FOR;
        self.provide();
        self.find_members();
        self.dirty = true;
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                if !is_relayed(&address) {
                    // A relay runs where it is reachable: its own addresses
                    // are the ones to hand out (loopback ones only when it
                    // was told to listen on loopback, as in tests).
                    let loopback_only = self.config.listen.iter().all(is_loopback);
                    if self.config.role == Role::Relay
                        && (is_public_candidate(&address) || loopback_only)
                    {
                        self.swarm.add_external_address(address.clone());
                    }
                    self.listen_addrs.push(address);
                }
                self.dirty = true;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                self.dirty = true;
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                for (relay, r) in &mut self.relays {
                    if r.listener == Some(listener_id) {
                        info!(%relay, ?reason, "relay reservation closed");
                        r.listener = None;
                        r.reservation = Reservation::Failed(match &reason {
                            Ok(()) => "closed".to_owned(),
                            Err(e) => e.to_string(),
                        });
                    }
                }
                // Forget relays whose listener closed; they are used again
                // when the connection to them is back.
                self.relays.retain(|_, r| r.listener.is_some());
                self.dirty = true;
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.dirty = true;
            }
            SwarmEvent::ExternalAddrExpired { .. } => self.dirty = true,
            SwarmEvent::NewExternalAddrCandidate { address }
                if !self.observed_addrs.contains(&address) =>
            {
                debug!(%address, "peers see us at");
                self.observed_addrs.push(address);
                if self.observed_addrs.len() > 8 {
                    self.observed_addrs.remove(0);
                }
                self.dirty = true;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                // The listening end of a relayed connection sees only
                // `/p2p/<peer>` as the remote address; its local address
                // names the circuit.
                let relayed = endpoint.is_relayed();
                let addr = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => {
                        local_addr.clone()
                    }
                    other => other.get_remote_address().clone(),
                };
                self.on_connection(
                    peer_id,
                    connection_id,
                    addr,
                    relayed,
                    endpoint.is_dialer(),
                    num_established.get(),
                )
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.punches.remove(&peer_id);
                    if self.relays.remove(&peer_id).is_some() {
                        info!(relay = %peer_id, "lost the connection to a relay");
                    }
                    info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    if self.registry.forget(&peer_id, Instant::now()) {
                        info!(peer = %peer_id, "withdrew the services of the disconnected peer");
                        let _ = self.events.send(Event::ServicesChanged);
                    }
                    let _ = self.events.send(Event::PeerDisconnected { peer: peer_id });
                }
                self.dirty = true;
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(peer) = peer_id
                    && self.member_dials.remove(&peer)
                    && !self.swarm.is_connected(&peer)
                {
                    let backoff = self
                        .unreachable
                        .get(&peer)
                        .map_or(Duration::from_secs(30), |(_, b)| {
                            (*b * 2).min(Duration::from_secs(600))
                        });
                    debug!(%peer, ?backoff, "member from the DHT unreachable; trying again later");
                    self.unreachable
                        .insert(peer, (Instant::now() + backoff, backoff));
                }
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        addr: peer_id.map(|p| p.to_string()).unwrap_or_default(),
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_connection(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addr: Multiaddr,
        relayed: bool,
        dialer: bool,
        established: u32,
    ) {
        if let Some(reply) = self.pending_dials.remove(&id) {
            let _ = reply.send(Ok(peer));
        }
        self.member_dials.remove(&peer);
        self.unreachable.remove(&peer);
        if dialer && !relayed {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        let initial = if self.is_member() {
            PeerKind::Pending
        } else {
            PeerKind::Client
        };
        let state = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(initial));
        let had_relayed_only = !state.conns.is_empty() && state.conns.values().all(|c| c.relayed);
        state.conns.insert(
            id,
            Conn {
                addr: addr.clone(),
                relayed,
                dialer,
            },
        );
        if had_relayed_only && !relayed {
            // A direct connection replaces the relayed ones: they close
            // after a grace period that lets the tunnels on them finish,
            // and from then on every tunnel uses the direct path.
            info!(%peer, %addr, "direct connection established; the relayed one closes in {RELAYED_GRACE:?}");
            self.close_relayed
                .push((peer, Instant::now() + RELAYED_GRACE));
        }
        if established == 1 {
            info!(%peer, %addr, relayed, "peer connected");
            if self.is_member() {
                self.challenge(peer);
            }
            let _ = self.events.send(Event::PeerConnected {
                peer,
                addr,
                relayed,
            });
        }
        self.dirty = true;
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // A peer's loopback addresses are only worth trying from the
                // same machine, that is over a loopback connection.
                let local_peer = self
                    .peers
                    .get(&peer_id)
                    .is_some_and(|p| p.conns.values().any(|c| is_loopback(&c.addr)));
                for addr in info
                    .listen_addrs
                    .iter()
                    .filter(|a| !is_relayed(a) && (local_peer || !is_loopback(a)))
                {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let is_relay = info.protocols.contains(&RELAY_HOP_PROTOCOL);
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.agent = Some(info.agent_version);
                    self.dirty = true;
                }
                if is_relay {
                    self.use_relay(peer_id);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.rtt = Some(rtt);
                    self.dirty = true;
                }
            }
            BehaviourEvent::Auth(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let response = self.on_auth_request(peer, request);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .auth
                            .send_response(channel, response);
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_auth_response(peer, request_id, response),
                }
            }
            BehaviourEvent::Auth(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                let connected = self.swarm.is_connected(&peer);
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                if state.kind != PeerKind::Pending
                    || state.challenge.as_ref().map(|(id, _)| *id) != Some(request_id)
                {
                    return;
                }
                state.challenge = None;
                let unsupported = matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                );
                if !unsupported && connected && state.challenges_sent < 3 {
                    // Lost with a duplicate connection that closed, or timed out.
                    debug!(%peer, %error, "admission request failed; asking again");
                    self.challenge(peer);
                } else {
                    debug!(%peer, %error, "peer does not prove membership; not admitted");
                    state.kind = PeerKind::Foreign;
                    self.dirty = true;
                }
            }
            BehaviourEvent::Auth(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                warn!(%peer, %error, "dropped a malformed admission request");
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let verdict = match message.source {
                    None => Err("unsigned gossip message".to_owned()),
                    Some(source) => self.accept_announcement(
                        &message.data,
                        propagation_source,
                        crate::record::MAX_TTL,
                        Some(source),
                    ),
                };
                let acceptance = match verdict {
                    Ok(()) => gossipsub::MessageAcceptance::Accept,
                    Err(reason) => {
                        self.reject(propagation_source, reason);
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic == self.topic.hash() && !self.local.is_empty() =>
            {
                debug!(peer = %peer_id, "peer subscribed to our namespace; announcing");
                self.announce();
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request { channel, .. } => {
                        let entries = if self.kind_of(&peer) == PeerKind::Member {
                            self.sync_entries()
                        } else {
                            debug!(%peer, "sync request from a peer that is not an admitted member");
                            Vec::new()
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, SyncResponse { entries });
                    }
                    request_response::Message::Response { response, .. } => {
                        for entry in response.entries {
                            let ttl = Duration::from_millis(entry.remaining_ms);
                            if let Err(reason) =
                                self.accept_announcement(&entry.sealed, peer, ttl, None)
                            {
                                self.reject(peer, reason);
                            }
                        }
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer, error, ..
            }) => {
                debug!(%peer, %error, "record sync failed");
            }
            BehaviourEvent::Sync(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                debug!(%peer, %error, "record sync request failed");
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) && !self.foreign.contains_key(&peer) {
                        debug!(%peer, %addr, "mDNS discovered a peer");
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result, .. }) => {
                self.on_kad_result(result)
            }
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => match event {
                relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                    debug!(peer = %src_peer_id, "granted a relay reservation")
                }
                relay::Event::CircuitReqAccepted {
                    src_peer_id,
                    dst_peer_id,
                } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection"),
                relay::Event::CircuitClosed {
                    src_peer_id,
                    dst_peer_id,
                    error,
                } => {
                    debug!(src = %src_peer_id, dst = %dst_peer_id, error = ?error.map(|e| e.to_string()), "relayed connection closed")
                }
                other => debug!(?other, "relay server"),
            },
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { old, new }) => {
                info!(?old, ?new, "reachability changed");
                self.reachability = match new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                self.dirty = true;
            }
            BehaviourEvent::Dcutr(event) => {
                let peer = event.remote_peer_id;
                match event.result {
                    Ok(conn) => {
                        info!(%peer, connection = ?conn, "hole punch succeeded: direct connection");
                        self.punches.remove(&peer);
                    }
                    Err(e) => self.punch_failed(peer, e.to_string()),
                }
            }
            _ => {}
        }
    }

    fn on_kad_result(&mut self, result: kad::QueryResult) {
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                for peer in providers {
                    self.dial_member(peer);
                }
            }
            kad::QueryResult::GetClosestPeers(Ok(found)) => {
                let providers: HashSet<PeerId> = self
                    .registry
                    .live()
                    .map(|e| e.announcement.provider)
                    .collect();
                for info in found.peers {
                    if providers.contains(&info.peer_id)
                        && !self.swarm.is_connected(&info.peer_id)
                        && !info.addrs.is_empty()
                    {
                        debug!(peer = %info.peer_id, addrs = ?info.addrs, "dialling a provider found in the DHT");
                        let _ = self.swarm.dial(
                            DialOpts::peer_id(info.peer_id)
                                .addresses(info.addrs)
                                .build(),
                        );
                    }
                }
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                debug!(error = %e, "advertising membership in the DHT failed")
            }
            _ => {}
        }
    }

    fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                if let Some(r) = self.relays.get_mut(&relay_peer_id) {
                    if r.reservation != Reservation::Accepted {
                        info!(relay = %relay_peer_id, "relay reservation accepted: peers can reach us through the relay");
                        // Advertise again, now with the relayed address.
                        r.reservation = Reservation::Accepted;
                        self.provide();
                    }
                    self.dirty = true;
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "connected to a peer through the relay")
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "a peer connected to us through the relay")
            }
        }
    }

    fn sync_entries(&mut self) -> Vec<SyncEntry> {
        let now = Instant::now();
        let namespace = self.config.namespace.clone();
        let mut entries: Vec<SyncEntry> = self
            .registry
            .live()
            .map(|e| SyncEntry {
                sealed: namespace.seal(&e.envelope),
                remaining_ms: e.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect();
        if !self.local.is_empty()
            && let Some(sealed) = self.own_announcement()
        {
            entries.push(SyncEntry {
                sealed,
                remaining_ms: self.config.record_ttl.as_millis() as u64,
            });
        }
        entries
    }

    fn publish_snapshot(&mut self) {
        self.dirty = false;
        let remote = self
            .registry
            .live()
            .flat_map(|e| {
                e.announcement.services.iter().map(|record| RemoteService {
                    peer: e.announcement.provider,
                    record: record.clone(),
                    expires: e.expires,
                })
            })
            .collect();
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| !p.conns.is_empty())
            .map(|(peer, p)| {
                (
                    *peer,
                    PeerLink {
                        addrs: p.conns.values().map(|c| c.addr.clone()).collect(),
                        direct: p.conns.values().any(|c| !c.relayed),
                        rtt: p.rtt,
                        agent: p.agent.clone(),
                        kind: p.kind,
                    },
                )
            })
            .collect();
        let relays = self
            .relays
            .iter()
            .map(|(peer, r)| RelayLink {
                peer: *peer,
                addr: r.addr.clone(),
                reservation: r.reservation.clone(),
            })
            .collect();
        let member = self.is_member();
        let snapshot = Snapshot {
            local_peer: *self.swarm.local_peer_id(),
            role: self.config.role,
            namespace: if member {
                self.config.namespace.name().to_owned()
            } else {
                String::new()
            },
            has_secret: member && self.config.namespace.has_secret(),
            listen_addrs: self.listen_addrs.clone(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            observed_addrs: self.observed_addrs.clone(),
            reachability: self.reachability,
            relays,
            bootstrap: self.config.bootstrap.clone(),
            admission_failures: self.failures.iter().cloned().collect(),
            local: self.local.clone(),
            health_failures: self.health_failures.clone(),
            remote,
            peers,
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}

/// Whether a relay's listen address is one to hand out: not loopback and
/// not a wildcard.
fn is_public_candidate(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => true,
        _ => false,
    })
}

/// Removes and returns the peers whose instant in `schedule` has come.
fn take_due(schedule: &mut Vec<(PeerId, Instant)>, now: Instant) -> Vec<PeerId> {
    let mut due = Vec::new();
    schedule.retain(|(peer, at)| {
        let keep = *at > now;
        if !keep {
            due.push(*peer);
        }
        keep
    });
    due
}

/// Groups addresses by the peer id they end in; each address without a
/// peer id is a group of its own.
pub fn group_by_peer(addrs: &[Multiaddr]) -> Vec<Vec<Multiaddr>> {
    let mut groups: Vec<Vec<Multiaddr>> = Vec::new();
    for addr in addrs {
        match peer_of(addr) {
            Some(peer) => match groups
                .iter_mut()
                .find(|g| g.first().and_then(peer_of) == Some(peer))
            {
                Some(group) => group.push(addr.clone()),
                None => groups.push(vec![addr.clone()]),
            },
            None => groups.push(vec![addr.clone()]),
        }
    }
    groups
}

/// Whether the address is QUIC (UDP) rather than TCP.
fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Udp(_)))
}

/// Whether the address is on a loopback interface.
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Whether the address goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The peer id at the end of an address, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().last().and_then(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        health::{HealthCheck, Probe, Report},
        record::ServiceRecord,
    };

    fn service(port: u16, check: Option<HealthCheck>) -> LocalService {
        LocalService {
            record: ServiceRecord::http("api", semver::Version::new(1, 0, 0)),
            port,
            health: check,
            scheme: crate::Scheme::Http,
        }
    }

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
        let mut config = Config::new(Keypair::generate_ed25519(), Namespace::new("team", None));
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
