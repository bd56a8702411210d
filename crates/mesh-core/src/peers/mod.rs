//! The peer table: the one owner of what the node knows per peer.
//!
//! Connected peers have an entry with their connections, what identify and
//! ping said, their [`PeerKind`], the admission handshake, the relay state
//! when the node uses them as a relay, and the hole-punch retries. Those go
//! with the last connection. What must outlive a connection, the dial
//! back-offs, is kept apart. Every method that changes what the
//! [`crate::Snapshot`] shows says so (`bool`, or a field of its result), and
//! the event loop republishes the snapshot from that. Nothing here touches
//! the swarm: the event loop carries out what the table returns.
//!
//! `C` names a connection and `R` an outbound request (libp2p's
//! `ConnectionId` and `OutboundRequestId` in the node).

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, core::transport::ListenerId};

use self::{liveness::Liveness, reconnect::Reconnect};
use crate::{
    addr::{is_loopback, is_quic},
    admission::{PeerKind, handshake::Handshake},
    snapshot::{PeerLink, RelayLink, Reservation},
};

pub(crate) mod links;
mod liveness;
mod reconnect;

pub(crate) use self::liveness::SILENT_AFTER;

/// How long a peer in another namespace (or with a wrong secret) is left
/// alone before discovery may dial it again.
pub(crate) const FOREIGN_BACKOFF: Duration = Duration::from_secs(60);
/// How long a relayed connection stays open once a direct one exists, so
/// that the tunnels on it can finish.
pub(crate) const RELAYED_GRACE: Duration = Duration::from_secs(3);
/// How often a relayed connection kept for a held peer (a long-lived
/// tunnel on it, [`crate::holds`]) is looked at again.
pub(crate) const HELD_RECHECK: Duration = Duration::from_secs(1);
/// Hole-punch rounds tried per peer (the first comes with the relayed
/// connection; each retry opens another relayed connection to run DCUtR on).
pub(crate) const PUNCH_ATTEMPTS: u32 = 3;
/// First back-off of a member found in the DHT that could not be reached;
/// it doubles on each failure up to [`UNREACHABLE_MAX`].
const UNREACHABLE_FIRST: Duration = Duration::from_secs(30);
const UNREACHABLE_MAX: Duration = Duration::from_secs(600);
/// How long an unreachable member's back-off is remembered after it ended.
const UNREACHABLE_MEMORY: Duration = Duration::from_secs(600);

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conn {
    /// The remote address (for a relayed inbound one, the circuit address).
    pub addr: Multiaddr,
    pub relayed: bool,
    /// Whether this node dialled it.
    pub dialer: bool,
}

/// A relay this node listens through.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    /// The relay's address, without `/p2p`.
    pub addr: Multiaddr,
    pub listener: Option<ListenerId>,
    pub reservation: Reservation,
}

/// Hole-punch retries with one peer.
#[derive(Debug)]
struct Punch<C> {
    rounds: u32,
    retry_at: Option<Instant>,
    /// The extra relayed connection opened for the current retry.
    extra: Option<C>,
}

impl<C> Default for Punch<C> {
    fn default() -> Self {
        Self {
            rounds: 0,
            retry_at: None,
            extra: None,
        }
    }
}

/// A connected peer.
#[derive(Debug)]
pub(crate) struct Peer<C, R> {
    conns: HashMap<C, Conn>,
    /// When the first of its connections opened.
    since: Instant,
    rtt: Option<Duration>,
    agent: Option<String>,
    kind: PeerKind,
    /// The admission handshake (members only).
    pub handshake: Handshake<R>,
    relay: Option<Relay>,
    punch: Punch<C>,
    disconnect_at: Option<Instant>,
    close_relayed_at: Option<Instant>,
    /// The direct addresses this node dialled the peer at.
    dialed: Vec<Multiaddr>,
}

impl<C, R> Peer<C, R> {
    fn new(kind: PeerKind, since: Instant) -> Self {
        Self {
            conns: HashMap::new(),
            since,
            rtt: None,
            agent: None,
            kind,
            handshake: Handshake::default(),
            relay: None,
            punch: Punch::default(),
            disconnect_at: None,
            close_relayed_at: None,
            dialed: Vec::new(),
        }
    }

    fn relayed_only(&self) -> bool {
        !self.conns.is_empty() && self.conns.values().all(|c| c.relayed)
    }
}

/// What survives a peer's connections: why not to dial it for a while.
#[derive(Debug, Default)]
struct Dialing {
    /// Another namespace or a failed admission: no dial before the instant.
    foreign_until: Option<Instant>,
    /// A member found in the DHT is being dialled.
    member_dial: bool,
    /// A member found in the DHT could not be reached: not dialled again
    /// before the instant; the duration is the current back-off. Stale
    /// rendezvous entries of members that left must not make a node hammer
    /// the relay.
    unreachable: Option<(Instant, Duration)>,
    /// A member this node had dialled lost its connection: redials due.
    reconnect: Option<Reconnect>,
}

impl Dialing {
    fn is_empty(&self) -> bool {
        self.foreign_until.is_none()
            && !self.member_dial
            && self.unreachable.is_none()
            && self.reconnect.is_none()
    }
}

/// What [`PeerTable::connected`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Connected {
    /// The first connection to the peer.
    pub first: bool,
    /// A direct connection to a peer reached only through relays so far:
    /// the relayed ones close after [`RELAYED_GRACE`].
    pub replaces_relayed: bool,
    /// A second direct connection this node dialled to a peer it already
    /// had one with over the same transport: to close at once. AutoNAT's
    /// dial-back is one: the prober learns from the answer on the first
    /// connection, and the dial-back connection, which gossipsub's streams
    /// would otherwise keep open for good, added one connection per peer
    /// and probe. Closed at once, before the peer opens a tunnel on it
    /// (libp2p-stream picks one of a peer's connections at random); a
    /// stream caught opening is opened again by the tunnel's handshake.
    pub extra: bool,
}

/// What [`PeerTable::closed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// The peer's last connection closed: it is gone from the table.
    pub last: bool,
    /// The peer was a relay this node listened through.
    pub was_relay: bool,
}

/// What a failed hole punch leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PunchFailed<C> {
    /// Rounds tried so far.
    pub rounds: u32,
    /// When another round is due, if one is.
    pub retry_in: Option<Duration>,
    /// The extra relayed connection of the failed round, to close.
    pub close: Option<C>,
}

/// Work that came due, for [`PeerTable::take_due`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Due<C> {
    /// Peers to disconnect now (their grace after a rejection is over).
    pub disconnect: Vec<PeerId>,
    /// Relayed connections to close (a direct one carries the tunnels).
    pub close: Vec<(PeerId, C)>,
    /// Peers to open another relayed connection to, for another hole punch.
    pub punch: Vec<PeerId>,
    /// Members and relays lost that are dialled again, at the direct
    /// addresses they were dialled at before (maybe none).
    pub redial: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Connections that answered no ping for [`SILENT_AFTER`]: to close.
    pub silent: Vec<(PeerId, C)>,
}

impl<C> Default for Due<C> {
    fn default() -> Self {
        Self {
            disconnect: Vec::new(),
            close: Vec::new(),
            punch: Vec::new(),
            redial: Vec::new(),
            silent: Vec::new(),
        }
    }
}

/// Every peer the node knows, connected or backed off.
#[derive(Debug)]
pub(crate) struct PeerTable<C, R> {
    peers: HashMap<PeerId, Peer<C, R>>,
    dialing: HashMap<PeerId, Dialing>,
    liveness: Liveness<C>,
}

impl<C, R> Default for PeerTable<C, R> {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
            dialing: HashMap::new(),
            liveness: Liveness::default(),
        }
    }
}

impl<C: Copy + Eq + Hash, R> PeerTable<C, R> {
    /// A connection to `peer` opened. A new peer starts as `initial`.
    pub(crate) fn connected(
        &mut self,
        peer: PeerId,
        id: C,
        conn: Conn,
        initial: PeerKind,
        now: Instant,
    ) -> Connected {
        if let Some(d) = self.dialing.get_mut(&peer) {
            d.member_dial = false;
            d.unreachable = None;
            d.reconnect = None;
        }
        self.dialing.retain(|_, d| !d.is_empty());
        let first = !self.peers.contains_key(&peer);
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| Peer::new(initial, now));
        let replaces_relayed = entry.relayed_only() && !conn.relayed;
        let extra = conn.dialer
            && !conn.relayed
            && entry
                .conns
                .values()
                .any(|c| !c.relayed && is_quic(&c.addr) == is_quic(&conn.addr));
        if conn.dialer && !conn.relayed && !entry.dialed.contains(&conn.addr) {
            entry.dialed.push(conn.addr.clone());
        }
        entry.conns.insert(id, conn);
        self.liveness.opened(peer, id, now);
        if replaces_relayed {
            entry.close_relayed_at = Some(now + RELAYED_GRACE);
        }
        Connected {
            first,
            replaces_relayed,
            extra,
        }
    }
}

impl<C: Copy + Eq + Hash, R> PeerTable<C, R> {
    /// A connection to `peer` closed; the peer goes with its last one. A
    /// member, or a relay this node had dialled, is dialled again from
    /// `now` on ([`reconnect`]).
    pub(crate) fn closed(&mut self, peer: PeerId, id: C, now: Instant) -> Closed {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return Closed {
                last: true,
                was_relay: false,
            };
        };
        entry.conns.remove(&id);
        self.liveness.forget(id);
        if !entry.conns.is_empty() {
            return Closed {
                last: false,
                was_relay: false,
            };
        }
        let gone = self.peers.remove(&peer);
        if let Some(p) = &gone {
            let max_gap = match p.kind {
                PeerKind::Member => Some(reconnect::GAP),
                PeerKind::Relay if !p.dialed.is_empty() => Some(reconnect::RELAY_GAP),
                _ => None,
            };
            if let Some(max_gap) = max_gap {
                let r = Reconnect::after_loss(peer, p.dialed.clone(), now, max_gap);
                self.dialing.entry(peer).or_default().reconnect = Some(r);
            }
        }
        Closed {
            last: true,
            was_relay: gone.is_some_and(|p| p.relay.is_some()),
        }
    }

    /// The peer's entry, when connected.
    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Peer<C, R>> {
        self.peers.get_mut(peer)
    }

    /// What the peer is; `Pending` for a peer not connected.
    pub(crate) fn kind(&self, peer: &PeerId) -> PeerKind {
        self.peers.get(peer).map_or(PeerKind::Pending, |p| p.kind)
    }

    /// Sets what the peer is. Returns whether it changed.
    pub(crate) fn set_kind(&mut self, peer: &PeerId, kind: PeerKind) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) if p.kind != kind => {
                p.kind = kind;
                true
            }
            _ => false,
        }
    }

    /// Records a ping round trip on connection `id`. Returns whether the
    /// view changed.
    pub(crate) fn set_rtt(&mut self, peer: &PeerId, id: C, rtt: Duration, now: Instant) -> bool {
        self.liveness.answered(id, now);
        match self.peers.get_mut(peer) {
            Some(p) if p.rtt != Some(rtt) => {
                p.rtt = Some(rtt);
                true
            }
            _ => false,
        }
    }

    /// The peer of connection `id` does not speak ping: its silence says
    /// nothing.
    pub(crate) fn no_pings(&mut self, id: C) {
        self.liveness.forget(id);
    }

    /// Redials of lost members and relays come due at once: a relay
    /// reservation was just accepted, so members behind NATs are reachable
    /// through it again.
    pub(crate) fn redial_now(&mut self, now: Instant) {
        for r in self
            .dialing
            .values_mut()
            .filter_map(|d| d.reconnect.as_mut())
        {
            r.hurry(now);
        }
    }

    /// Records the agent identify reported. Returns whether it changed.
    pub(crate) fn set_agent(&mut self, peer: &PeerId, agent: String) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) if p.agent.as_deref() != Some(agent.as_str()) => {
                p.agent = Some(agent);
                true
            }
            _ => false,
        }
    }

    /// Whether any peer is connected.
    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Connected members (and peers whose admission is still running), and
    /// members being dialled after they were found (the links of
    /// `links.rs`).
    pub(crate) fn member_links(&self) -> usize {
        let connected = self
            .peers
            .values()
            .filter(|p| matches!(p.kind, PeerKind::Member | PeerKind::Pending))
            .count();
        connected + self.dialing.values().filter(|d| d.member_dial).count()
    }

    /// The member connections, each with whether to `keep` it.
    pub(crate) fn member_link_list(&self, keep: impl Fn(&PeerId) -> bool) -> Vec<links::Link> {
        self.peers
            .iter()
            .filter(|(_, p)| p.kind == PeerKind::Member)
            .map(|(peer, p)| links::Link {
                peer: *peer,
                since: p.since,
                keep: keep(peer),
                dialled: p.conns.values().any(|c| c.dialer),
            })
            .collect()
    }

    /// Connected members.
    pub(crate) fn members(&self) -> impl Iterator<Item = &PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.kind == PeerKind::Member)
            .map(|(peer, _)| peer)
    }

    /// Drops the redials of a lost member: in a bounded mesh a closed link
    /// is not a lost member.
    pub(crate) fn forget_reconnect(&mut self, peer: &PeerId) {
        if let Some(d) = self.dialing.get_mut(peer) {
            d.reconnect = None;
        }
        self.dialing.retain(|_, d| !d.is_empty());
    }

    /// Whether any admitted member is connected.
    pub(crate) fn any_member(&self) -> bool {
        self.peers.values().any(|p| p.kind == PeerKind::Member)
    }

    /// Every connected peer.
    pub(crate) fn ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Whether some connection goes to one of `addrs`.
    pub(crate) fn connected_at(&self, addrs: &[Multiaddr]) -> bool {
        self.peers
            .values()
            .any(|p| p.conns.values().any(|c| addrs.contains(&c.addr)))
    }

    /// Whether the peer is reached over loopback (its loopback addresses are
    /// then worth trying).
    pub(crate) fn on_loopback(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.conns.values().any(|c| is_loopback(&c.addr)))
    }

    /// The address of a direct connection to the peer, one this node
    /// dialled first.
    pub(crate) fn direct_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.peers.get(peer).and_then(|p| {
            p.conns
                .values()
                .filter(|c| !c.relayed)
                .max_by_key(|c| c.dialer)
                .map(|c| c.addr.clone())
        })
    }

    /// Whether the peer is connected, through relays only.
    pub(crate) fn is_relayed_only(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(Peer::relayed_only)
    }

    /// Whether every open connection to the peer is one it dialled (it
    /// came to this node, not the other way round).
    pub(crate) fn came_to_us(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| !p.conns.is_empty() && p.conns.values().all(|c| !c.dialer))
    }

    /// For each connection to the peer, whether it is QUIC.
    pub(crate) fn transports(&self, peer: &PeerId) -> Vec<bool> {
        self.peers
            .get(peer)
            .map(|p| p.conns.values().map(|c| is_quic(&c.addr)).collect())
            .unwrap_or_default()
    }

    /// Leaves a peer alone (no dial from discovery) for [`FOREIGN_BACKOFF`].
    pub(crate) fn back_off(&mut self, peer: PeerId, now: Instant) {
        self.dialing.entry(peer).or_default().foreign_until = Some(now + FOREIGN_BACKOFF);
    }

    /// Disconnects the peer once a grace period is over.
    pub(crate) fn disconnect_after(&mut self, peer: &PeerId, grace: Duration, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.disconnect_at = Some(now + grace);
        }
    }

    /// Whether discovery must leave the peer alone.
    pub(crate) fn is_backed_off(&self, peer: &PeerId, now: Instant) -> bool {
        self.dialing
            .get(peer)
            .and_then(|d| d.foreign_until)
            .is_some_and(|until| until > now)
    }

    /// Forgets the back-offs of foreign and rejected peers (a new namespace
    /// or secret changes what they are).
    pub(crate) fn clear_back_offs(&mut self) {
        for d in self.dialing.values_mut() {
            d.foreign_until = None;
            // Members of the namespace left are not dialled back either.
            d.reconnect = None;
        }
        self.dialing.retain(|_, d| !d.is_empty());
    }

    /// Whether a member found in the DHT may be dialled now.
    pub(crate) fn may_dial_member(&self, peer: &PeerId, now: Instant) -> bool {
        !self.peers.contains_key(peer)
            && !self.is_backed_off(peer, now)
            && self
                .dialing
                .get(peer)
                .and_then(|d| d.unreachable)
                .is_none_or(|(until, _)| until <= now)
    }

    /// A member found in the DHT is being dialled.
    pub(crate) fn member_dial_started(&mut self, peer: PeerId) {
        self.dialing.entry(peer).or_default().member_dial = true;
    }

    /// A dial of `peer` failed. When it was a member found in the DHT and
    /// the peer is still not connected, it is backed off: returns for how
    /// long.
    pub(crate) fn dial_failed(&mut self, peer: PeerId, now: Instant) -> Option<Duration> {
        let connected = self.peers.contains_key(&peer);
        let d = self.dialing.get_mut(&peer)?;
        if !std::mem::take(&mut d.member_dial) || connected {
            self.dialing.retain(|_, d| !d.is_empty());
            return None;
        }
        let backoff = d
            .unreachable
            .map_or(UNREACHABLE_FIRST, |(_, b)| (b * 2).min(UNREACHABLE_MAX));
        d.unreachable = Some((now + backoff, backoff));
        Some(backoff)
    }

    /// Drops back-offs that are over (an unreachable member's is remembered
    /// a while longer, so that its next one is longer), and returns the work
    /// that came due. The relayed connections of a peer that is `held` stay,
    /// and are looked at again after [`HELD_RECHECK`].
    pub(crate) fn take_due(&mut self, now: Instant, held: impl Fn(&PeerId) -> bool) -> Due<C> {
        let mut due = Due::default();
        for d in self.dialing.values_mut() {
            d.foreign_until = d.foreign_until.filter(|until| *until > now);
            d.unreachable = d
                .unreachable
                .filter(|(until, _)| *until + UNREACHABLE_MEMORY > now);
            if let Some(r) = &mut d.reconnect {
                let (dial, more) = r.due(now);
                due.redial.extend(dial);
                if !more {
                    d.reconnect = None;
                }
            }
        }
        self.dialing.retain(|_, d| !d.is_empty());
        due.silent = self.liveness.take_silent(now);
        for (peer, p) in &mut self.peers {
            if p.disconnect_at.is_some_and(|at| at <= now) {
                p.disconnect_at = None;
                due.disconnect.push(*peer);
            }
            if p.close_relayed_at.is_some_and(|at| at <= now) {
                p.close_relayed_at = None;
                if held(peer) {
                    p.close_relayed_at = Some(now + HELD_RECHECK);
                } else if p.conns.values().any(|c| !c.relayed) {
                    let relayed = p.conns.iter().filter(|(_, c)| c.relayed);
                    due.close.extend(relayed.map(|(id, _)| (*peer, *id)));
                }
            }
            if p.punch.retry_at.is_some_and(|at| at <= now) {
                p.punch.retry_at = None;
                if p.relayed_only() {
                    due.punch.push(*peer);
                }
            }
        }
        due
    }

    /// A hole punch with `peer` failed; `retry` says whether this side
    /// tries again (only one side does).
    pub(crate) fn punch_failed(
        &mut self,
        peer: PeerId,
        retry: bool,
        now: Instant,
    ) -> PunchFailed<C> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return PunchFailed {
                rounds: 1,
                retry_in: None,
                close: None,
            };
        };
        let punch = &mut p.punch;
        punch.rounds += 1;
        let close = punch.extra.take();
        let retry_in = (retry && punch.rounds < PUNCH_ATTEMPTS)
            .then(|| Duration::from_secs(2u64.pow(punch.rounds)));
        punch.retry_at = retry_in.map(|backoff| now + backoff);
        PunchFailed {
            rounds: punch.rounds,
            retry_in,
            close,
        }
    }

    /// The relayed connection opened for another hole punch.
    pub(crate) fn punch_dialled(&mut self, peer: &PeerId, id: C) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.punch.extra = Some(id);
        }
    }

    /// A hole punch with `peer` succeeded: no more retries.
    pub(crate) fn punch_succeeded(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.punch = Punch::default();
        }
    }

    /// Whether the node listens through `peer`.
    pub(crate) fn is_relay(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.relay.is_some())
    }

    /// Whether the node listens through any relay.
    pub(crate) fn has_relays(&self) -> bool {
        self.peers.values().any(|p| p.relay.is_some())
    }

    /// The relays the node listens through.
    pub(crate) fn relays(&self) -> impl Iterator<Item = (PeerId, &Relay)> {
        self.peers
            .iter()
            .filter_map(|(id, p)| p.relay.as_ref().map(|r| (*id, r)))
    }

    /// The node listens through the connected `peer`. Returns whether the
    /// view changed.
    pub(crate) fn add_relay(&mut self, peer: &PeerId, relay: Relay) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) => {
                p.relay = Some(relay);
                true
            }
            None => false,
        }
    }

    /// The relay granted a reservation. Returns whether it is new.
    pub(crate) fn reservation_accepted(&mut self, peer: &PeerId) -> bool {
        match self.peers.get_mut(peer).and_then(|p| p.relay.as_mut()) {
            Some(r) if r.reservation != Reservation::Accepted => {
                r.reservation = Reservation::Accepted;
                true
            }
            _ => false,
        }
    }

    /// A listener closed: a relay listened through with it is given up,
    /// and so is every relay without a listener; they are used again when
    /// the connection to them is back. Returns the relays given up.
    pub(crate) fn listener_closed(&mut self, listener: ListenerId) -> Vec<PeerId> {
        let mut dropped = Vec::new();
        for (id, p) in &mut self.peers {
            if p.relay
                .as_ref()
                .is_some_and(|r| r.listener.is_none() || r.listener == Some(listener))
            {
                p.relay = None;
                dropped.push(*id);
            }
        }
        dropped
    }

    /// Every connected peer as the snapshot shows it.
    pub(crate) fn links(&self) -> BTreeMap<PeerId, PeerLink> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.conns.is_empty())
            .map(|(peer, p)| {
                let link = PeerLink {
                    addrs: p.conns.values().map(|c| c.addr.clone()).collect(),
                    direct: p.conns.values().any(|c| !c.relayed),
                    rtt: p.rtt,
                    agent: p.agent.clone(),
                    kind: p.kind,
                };
                (*peer, link)
            })
            .collect()
    }

    /// Every relay the node listens through as the snapshot shows it.
    pub(crate) fn relay_links(&self) -> Vec<RelayLink> {
        self.relays()
            .map(|(peer, r)| RelayLink {
                peer,
                addr: r.addr.clone(),
                reservation: r.reservation.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
