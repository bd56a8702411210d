//! The cloneable handle to a running node, the commands it sends to the
//! event loop and the events the loop broadcasts.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    Error, LocalService, Snapshot,
    error::{RecordRejection, Rejection},
    health,
    namespace::Namespace,
    record::RecordError,
};

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
    AdmissionFailed { peer: PeerId, reason: Rejection },
    /// The set of known services changed.
    ServicesChanged,
    /// A record from the network was dropped.
    RecordRejected {
        from: PeerId,
        reason: Arc<RecordRejection>,
    },
}

/// What a [`NodeHandle`] asks of the event loop; each carries the sender of
/// its reply.
pub(super) enum Command {
    Register {
        service: LocalService,
        sender: oneshot::Sender<Result<(), RecordError>>,
    },
    Unregister {
        name: String,
        sender: oneshot::Sender<bool>,
    },
    SetHealth {
        report: health::Report,
        sender: oneshot::Sender<bool>,
    },
    Dial {
        addrs: Vec<Multiaddr>,
        sender: oneshot::Sender<Result<PeerId, Error>>,
    },
    Connect {
        peer: PeerId,
        sender: oneshot::Sender<Result<PeerId, Error>>,
    },
    Join {
        namespace: Namespace,
        bootstrap: Vec<Multiaddr>,
        sender: oneshot::Sender<()>,
    },
    AddBootstrap {
        addrs: Vec<Multiaddr>,
        sender: oneshot::Sender<()>,
    },
    Shutdown {
        sender: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) control: libp2p_stream::Control,
    pub(super) peer_id: PeerId,
    pub(super) counters: Arc<crate::counters::Counters>,
    pub(super) holds: Arc<crate::holds::Holds>,
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

    /// The node's hole-punch and gossip counters.
    pub fn counters(&self) -> &crate::counters::Counters {
        &self.counters
    }

    /// Keeps every connection to `peer` open, relayed ones included, until
    /// the guard drops: for a tunnel that lives long (a TCP session) and
    /// cannot move to a direct connection that a hole punch opens later.
    pub fn hold_connections(&self, peer: PeerId) -> crate::holds::Hold {
        self.holds.hold(peer)
    }

    /// Marks the link to `peer` in use until the guard drops: for every
    /// open tunnel stream, so that trimming the bounded mesh
    /// (`peers/links.rs`) does not close the connection under it.
    pub fn use_link(&self, peer: PeerId) -> crate::holds::LinkUse {
        self.holds.use_link(peer)
    }

    /// Connects to `peer` unless it is connected: at the addresses the DHT
    /// and identify gave, and through this node's relays. For a tunnel to a
    /// provider of a team larger than the full mesh, which this node may
    /// have no connection to.
    pub async fn connect(&self, peer: PeerId) -> Result<(), Error> {
        self.call(|sender| Command::Connect { peer, sender })
            .await?
            .map(|_| ())
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
    /// the same name. Refused when the node's announcement would go over
    /// [`MAX_SERVICES`](crate::record::MAX_SERVICES) or
    /// [`MAX_ANNOUNCEMENT_BYTES`](crate::record::MAX_ANNOUNCEMENT_BYTES).
    pub async fn register(&self, service: LocalService) -> Result<(), Error> {
        service.record.validate()?;
        self.call(|sender| Command::Register { service, sender })
            .await?
            .map_err(Error::from)
    }

    /// Stops providing a service. Returns whether it was provided.
    pub async fn unregister(&self, name: &str) -> Result<bool, Error> {
        let name = name.to_owned();
        self.call(|sender| Command::Unregister { name, sender })
            .await
    }

    /// Applies a health checker's report: when `report.service` is still
    /// provided from the same port with the same check, its record takes
    /// the reported health (a change is announced at once, with a new
    /// sequence number) and its last failure is kept for `status`. Returns
    /// whether the report applied; `false` means the service was withdrawn
    /// or replaced and the checker should stop.
    pub async fn set_health(&self, report: health::Report) -> Result<bool, Error> {
        self.call(|sender| Command::SetHealth { report, sender })
            .await
    }

    /// Connects to a peer and waits until the connection is established.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.dial_any(vec![addr]).await
    }

    /// Connects to one peer at any of `addrs` (all ending in the same
    /// `/p2p/<id>`), tried at once; the first that works wins.
    pub async fn dial_any(&self, addrs: Vec<Multiaddr>) -> Result<PeerId, Error> {
        self.call(|sender| Command::Dial { addrs, sender }).await?
    }

    /// Moves the node to another namespace (or the same one with another
    /// secret): forgets every record, closes the connections to members of
    /// the old one, adds `bootstrap` to the bootstrap peers (dialled by the
    /// next redial, or by [`NodeHandle::dial`]) and looks for the new
    /// namespace's members. Local services are announced there.
    pub async fn join(&self, namespace: Namespace, bootstrap: Vec<Multiaddr>) -> Result<(), Error> {
        self.call(|sender| Command::Join {
            namespace,
            bootstrap,
            sender,
        })
        .await
    }

    /// Adds bootstrap peers (kept and redialled like configured ones) and
    /// dials those not connected.
    pub async fn add_bootstrap(&self, addrs: Vec<Multiaddr>) -> Result<(), Error> {
        self.call(|sender| Command::AddBootstrap { addrs, sender })
            .await
    }

    /// Withdraws every service, tells the peers and stops the node.
    pub async fn shutdown(&self) {
        let _ = self.call(|sender| Command::Shutdown { sender }).await;
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (sender, reply) = oneshot::channel();
        self.commands
            .send(make(sender))
            .await
            .map_err(|_| Error::Stopped)?;
        reply.await.map_err(|_| Error::Stopped)
    }
}
