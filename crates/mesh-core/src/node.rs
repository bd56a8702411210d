//! The swarm actor: one task owns the libp2p `Swarm`; a cloneable
//! [`NodeHandle`] talks to it over a bounded channel.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, dcutr, gossipsub, identify,
    identity::Keypair,
    kad, mdns,
    multiaddr::Protocol,
    noise, ping, relay,
    request_response::{self, ProtocolSupport},
    swarm::{
        ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle, dial_opts::DialOpts,
    },
    tcp, yamux,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::{
    Error,
    record::{Announcement, FORMAT_VERSION},
    registry::{Outcome, Registry},
    snapshot::{LocalService, PeerLink, RemoteService, Snapshot},
};

/// Protocol of the record table sync on connect.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/sync/1");
/// Kademlia protocol name: keeps the devmesh DHT apart from the public one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/devmesh/id/1.0.0";

/// Settings of a [`Node`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The node identity.
    pub keypair: Keypair,
    /// Namespace to join.
    pub namespace: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever the connection is lost.
    pub bootstrap: Vec<Multiaddr>,
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
    pub fn new(keypair: Keypair, namespace: impl Into<String>) -> Self {
        Self {
            keypair,
            namespace: namespace.into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
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
    /// The set of known services changed.
    ServicesChanged,
    /// A record from the network was dropped.
    RecordRejected { from: PeerId, reason: String },
}

/// Request of the record-table sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Namespace the requester is in.
    pub namespace: String,
}

/// Response of the record-table sync: every live announcement known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Signed announcements with their remaining lifetime.
    pub entries: Vec<SyncEntry>,
}

/// One announcement in a [`SyncResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncEntry {
    /// Signed envelope, as published.
    pub envelope: Vec<u8>,
    /// Milliseconds the sender still considers it valid.
    pub remaining_ms: u64,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay_client: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    sync: request_response::json::Behaviour<SyncRequest, SyncResponse>,
    dcutr: dcutr::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Register(LocalService, oneshot::Sender<Result<(), Error>>),
    Unregister(String, oneshot::Sender<bool>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, Error>>),
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

    /// Connects to a peer and waits until the connection is established.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|tx| Command::Dial(addr, tx)).await?
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
}

#[derive(Debug, Default)]
struct PeerState {
    conns: HashMap<ConnectionId, Conn>,
    rtt: Option<Duration>,
    agent: Option<String>,
}

/// The libp2p node. Create it with [`Node::spawn`].
pub struct Node {
    swarm: Swarm<Behaviour>,
    config: Config,
    topic: gossipsub::IdentTopic,
    registry: Registry,
    local: BTreeMap<String, LocalService>,
    peers: HashMap<PeerId, PeerState>,
    listen_addrs: Vec<Multiaddr>,
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
        let topic =
            gossipsub::IdentTopic::new(format!("/devmesh/ns/{}/records/1", config.namespace));
        let snapshot = Arc::new(Snapshot {
            local_peer: peer_id,
            namespace: config.namespace.clone(),
            listen_addrs: Vec::new(),
            local: BTreeMap::new(),
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
            peers: HashMap::new(),
            listen_addrs: Vec::new(),
            pending_dials: HashMap::new(),
            seq: 0,
            dirty: false,
            snapshot_tx,
            events: events.clone(),
            config,
        };
        node.start()?;
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

    fn start(&mut self) -> Result<(), Error> {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&self.topic)
            .map_err(|e| Error::Setup(format!("subscribing to records topic: {e}")))?;
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        for addr in self.config.bootstrap.clone() {
            self.dial_addr(addr, None);
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let mut expiry = tokio::time::interval(Duration::from_millis(500));
        let mut redial = tokio::time::interval(Duration::from_secs(10));
        let mut kad_bootstrap = tokio::time::interval(Duration::from_secs(60));
        for t in [&mut heartbeat, &mut expiry, &mut redial, &mut kad_bootstrap] {
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
                _ = expiry.tick() => {
                    let gone = self.registry.expire(Instant::now());
                    for peer in gone {
                        info!(%peer, "service records expired");
                        self.dirty = true;
                    }
                }
                _ = redial.tick() => self.redial_bootstrap(),
                _ = kad_bootstrap.tick() => {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            if self.dirty {
                self.publish_snapshot();
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Register(service, reply) => {
                let name = service.record.name.clone();
                info!(service = %name, version = %service.record.version, port = service.port, "providing service");
                self.local.insert(name, service);
                self.dirty = true;
                self.announce();
                let _ = reply.send(Ok(()));
            }
            Command::Unregister(name, reply) => {
                let existed = self.local.remove(&name).is_some();
                if existed {
                    info!(service = %name, "withdrawing service");
                    self.dirty = true;
                    self.announce();
                }
                let _ = reply.send(existed);
            }
            Command::Dial(addr, reply) => self.dial_addr(addr, Some(reply)),
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn dial_addr(
        &mut self,
        addr: Multiaddr,
        reply: Option<oneshot::Sender<Result<PeerId, Error>>>,
    ) {
        let opts = match peer_of(&addr) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                debug!(%addr, "dialling");
                if let Some(reply) = reply {
                    self.pending_dials.insert(id, reply);
                }
            }
            Err(e) => {
                // Already connected counts as success for the caller.
                if let Some(peer) = peer_of(&addr)
                    && self.swarm.is_connected(&peer)
                {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(peer));
                    }
                    return;
                }
                warn!(%addr, error = %e, "dial failed");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::Dial {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }

    fn redial_bootstrap(&mut self) {
        for addr in self.config.bootstrap.clone() {
            let connected = match peer_of(&addr) {
                Some(peer) => self.swarm.is_connected(&peer),
                None => self
                    .peers
                    .values()
                    .any(|p| p.conns.values().any(|c| c.addr == addr)),
            };
            if !connected {
                self.dial_addr(addr, None);
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.seq = now.max(self.seq + 1);
        self.seq
    }

    fn own_announcement(&mut self) -> Option<Vec<u8>> {
        let announcement = Announcement {
            v: FORMAT_VERSION,
            namespace: self.config.namespace.clone(),
            provider: *self.swarm.local_peer_id(),
            seq: self.next_seq(),
            ttl_secs: self.config.record_ttl.as_secs().max(1) as u32,
            services: self.local.values().map(|s| s.record.clone()).collect(),
        };
        match announcement.sign(&self.config.keypair) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(error = %e, "cannot sign own announcement");
                None
            }
        }
    }

    fn announce(&mut self) {
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

    /// Verifies and applies an announcement received from `from`. When it
    /// came by gossip, `author` is the authenticated publisher, which must be
    /// the provider the record describes.
    fn accept_announcement(
        &mut self,
        bytes: &[u8],
        from: PeerId,
        ttl: Duration,
        author: Option<PeerId>,
    ) -> Result<(), String> {
        let announcement =
            Announcement::verify(bytes, &self.config.namespace).map_err(|e| e.to_string())?;
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
            .insert(announcement, bytes.to_vec(), ttl, Instant::now())
        {
            Outcome::Changed => {
                info!(%provider, via = %from, services = ?services, "service records updated");
                self.dirty = true;
                let _ = self.events.send(Event::ServicesChanged);
                if !services.is_empty() && !self.swarm.is_connected(&provider) {
                    // Learned through another peer: find the provider's
                    // addresses in the DHT so tunnels can reach it.
                    debug!(%provider, "looking up a provider we are not connected to");
                    self.swarm.behaviour_mut().kad.get_closest_peers(provider);
                }
            }
            Outcome::Refreshed => self.dirty = true,
            Outcome::Stale => debug!(%provider, "ignoring stale announcement"),
        }
        Ok(())
    }

    fn reject(&self, from: PeerId, reason: String) {
        warn!(peer = %from, %reason, "dropped malformed or invalid record");
        let _ = self.events.send(Event::RecordRejected { from, reason });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address);
                self.dirty = true;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                self.dirty = true;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let relayed = is_relayed(&addr);
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() && !relayed {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                self.peers.entry(peer_id).or_default().conns.insert(
                    connection_id,
                    Conn {
                        addr: addr.clone(),
                        relayed,
                    },
                );
                if num_established.get() == 1 {
                    info!(peer = %peer_id, %addr, relayed, "peer connected");
                    let namespace = self.config.namespace.clone();
                    self.swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer_id, SyncRequest { namespace });
                    let _ = self.events.send(Event::PeerConnected {
                        peer: peer_id,
                        addr,
                        relayed,
                    });
                }
                self.dirty = true;
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

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.agent = Some(info.agent_version);
                    self.dirty = true;
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
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let entries = if request.namespace == self.config.namespace {
                            self.sync_entries()
                        } else {
                            debug!(%peer, namespace = %request.namespace, "sync request for another namespace");
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
                                self.accept_announcement(&entry.envelope, peer, ttl, None)
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
                    if !self.swarm.is_connected(&peer) {
                        debug!(%peer, %addr, "mDNS discovered a peer");
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            }) => {
                let providers: std::collections::HashSet<PeerId> = self
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
            BehaviourEvent::Dcutr(event) => info!(?event, "hole punching"),
            _ => {}
        }
    }

    fn sync_entries(&mut self) -> Vec<SyncEntry> {
        let now = Instant::now();
        let mut entries: Vec<SyncEntry> = self
            .registry
            .live()
            .map(|e| SyncEntry {
                envelope: e.envelope.clone(),
                remaining_ms: e.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect();
        if !self.local.is_empty()
            && let Some(envelope) = self.own_announcement()
        {
            entries.push(SyncEntry {
                envelope,
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
                    },
                )
            })
            .collect();
        let snapshot = Snapshot {
            local_peer: *self.swarm.local_peer_id(),
            namespace: self.config.namespace.clone(),
            listen_addrs: self.listen_addrs.clone(),
            local: self.local.clone(),
            remote,
            peers,
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}

fn build_swarm(config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
    let mdns_enabled = config.mdns;
    let agent = config.agent.clone();
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let gossipsub_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(crate::record::MAX_ANNOUNCEMENT_BYTES + 4096)
                .heartbeat_interval(Duration::from_secs(1))
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub_config,
            )?;
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(KAD_PROTOCOL),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if mdns_enabled {
                let cfg = mdns::Config {
                    query_interval: Duration::from_secs(5),
                    ..Default::default()
                };
                Some(mdns::tokio::Behaviour::new(cfg, peer_id)?)
            } else {
                None
            };
            Ok(Behaviour {
                relay_client,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(agent),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(5)),
                ),
                gossipsub,
                kad,
                mdns: Toggle::from(mdns),
                sync: request_response::json::Behaviour::new(
                    [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ),
                dcutr: dcutr::Behaviour::new(peer_id),
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
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
