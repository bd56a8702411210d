//! The member connections a node keeps: the full mesh of a small team and
//! the bounded mesh of a large one, as `peers/links.rs` decides; and the
//! connections a tunnel opens on demand.

use std::{collections::HashSet, hash::BuildHasher as _, time::Instant};

use libp2p::{
    Multiaddr, PeerId, kad,
    swarm::{
        DialError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::Node;
use crate::Error;

impl Node {
    /// The other members this node knows: the providers in its registry
    /// and the members it is connected to.
    pub(super) fn known_members(&self) -> usize {
        let me = self.local_peer();
        let mut known: HashSet<PeerId> = self
            .records
            .registry()
            .live()
            .map(|e| e.announcement.provider)
            .collect();
        known.extend(self.peers.members().copied());
        known.remove(&me);
        known.len()
    }

    /// Whether this node keeps a bounded mesh (a team larger than the full
    /// mesh).
    pub(super) fn bounded(&self) -> bool {
        self.is_member() && self.links.bounded(self.known_members())
    }

    /// How many more members to dial now; `None`: every member found.
    pub(super) fn member_dials_left(&self) -> Option<usize> {
        if !self.is_member() {
            return None;
        }
        self.links
            .dials_wanted(self.known_members(), self.peers.member_links())
    }

    /// Dials the providers this node knows and is not connected to: all
    /// of them in a full mesh; in a bounded one, at random, until it has
    /// the links it wants. Called once a sync answer or gossip is applied
    /// (so that a newcomer's choice sees the whole table, not the first
    /// providers of its first answer) and on every housekeeping tick.
    pub(super) fn top_up_links(&mut self) {
        let left = match self.member_dials_left() {
            Some(0) => return,
            Some(n) => n,
            None => usize::MAX,
        };
        let now = Instant::now();
        let mut candidates: Vec<PeerId> = self
            .records
            .registry()
            .live()
            .map(|e| e.announcement.provider)
            .filter(|p| *p != self.local_peer() && self.peers.may_dial_member(p, now))
            .collect();
        candidates.sort_by_key(|p| self.shuffle.hash_one(p));
        for peer in candidates.into_iter().take(left) {
            self.dial_member(peer);
        }
    }

    /// Closes the newest member links no tunnel uses while there are more
    /// than a bounded mesh keeps.
    pub(super) fn trim_links(&mut self) {
        if !self.bounded() {
            return;
        }
        let holds = &self.holds;
        let links = self
            .peers
            .member_link_list(|peer| holds.in_use(peer) || holds.held(peer));
        for peer in self.links.trimmed(&links, Instant::now()) {
            info!(%peer, "closing a member link the bounded mesh does not need");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// See [`crate::NodeHandle::connect`]. A peer with no known address is
    /// looked up in the DHT first ([`Node::looked_up`]).
    pub(super) fn connect(&mut self, peer: PeerId, reply: oneshot::Sender<Result<PeerId, Error>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        if let Err(reply) = self.dial_for_tunnel(peer, Vec::new(), reply) {
            let lookup = !self.pending_lookups.contains_key(&peer);
            self.pending_lookups.entry(peer).or_default().push(reply);
            if lookup {
                debug!(%peer, "no address to connect on demand at; asking the DHT");
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
        }
    }

    /// A DHT lookup ended: dials the peers `connect` waits for at what it
    /// found, or tells them it found nothing.
    pub(super) fn looked_up(&mut self, found: &kad::GetClosestPeersOk) {
        let Ok(peer) = PeerId::from_bytes(&found.key) else {
            return;
        };
        let Some(waiting) = self.pending_lookups.remove(&peer) else {
            return;
        };
        let addrs: Vec<Multiaddr> = found
            .peers
            .iter()
            .filter(|p| p.peer_id == peer)
            .flat_map(|p| p.addrs.clone())
            .collect();
        for reply in waiting {
            if let Err(reply) = self.dial_for_tunnel(peer, addrs.clone(), reply) {
                let _ = reply.send(Err(Error::NoAddress));
            }
        }
    }

    /// Dials `peer` at `addrs`, its relay circuits and what the behaviours
    /// know, answering `reply` once connected; hands `reply` back when
    /// there is no address to dial.
    fn dial_for_tunnel(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    ) -> Result<(), oneshot::Sender<Result<PeerId, Error>>> {
        let mut addrs = addrs;
        addrs.extend(self.circuits_to(peer));
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::Disconnected)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                info!(%peer, "connecting on demand, for a tunnel");
                self.pending_dials.insert(id, reply);
                Ok(())
            }
            Err(DialError::NoAddresses) => Err(reply),
            Err(source) => {
                let _ = reply.send(Err(Error::Dial {
                    target: crate::error::dial_target(Some(peer), &[], &source),
                    cause: Box::new(source),
                }));
                Ok(())
            }
        }
    }
}
