//! Getting through NATs: relays and their reservations, the namespace's
//! rendezvous in the DHT, dials through relays, and hole-punch retries.

use std::{collections::HashSet, time::Instant};

use libp2p::{
    Multiaddr, PeerId, dcutr, kad, relay,
    swarm::{
        DialError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tracing::{debug, info, warn};

use super::{Changed, Node};
use crate::{
    addr::{circuit, is_quic, peer_of, without_peer},
    peers::Relay,
    snapshot::Reservation,
};

impl Node {
    /// Listens through a relay so that peers can reach this node through it.
    pub(super) fn use_relay(&mut self, relay: PeerId) -> Changed {
        if !self.is_member() || self.peers.is_relay(&relay) {
            return Changed::NO;
        }
        let Some(addr) = self.peers.direct_addr(&relay) else {
            return Changed::NO;
        };
        self.connect_other_transports(relay);
        let addr = without_peer(&addr);
        let listen = circuit(&addr, relay, None);
        let listener = match self.swarm.listen_on(listen.clone()) {
            Ok(id) => {
                info!(%relay, circuit = %listen, "asking the relay for a reservation");
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
        let relay_state = Relay {
            addr,
            listener,
            reservation,
        };
        let changed = self.peers.add_relay(&relay, relay_state);
        self.discovery.find_fast();
        self.provide();
        self.find_members();
        Changed::from(changed)
    }

    /// Hole punching needs an observed address of each transport it may
    /// punch with; identify reports one per connection. Connects to the
    /// relay over the transports not used yet, as far as its bootstrap
    /// addresses offer them.
    fn connect_other_transports(&mut self, relay: PeerId) {
        let used = self.peers.transports(&relay);
        let others: Vec<Multiaddr> = self
            .discovery
            .bootstrap()
            .iter()
            .filter(|a| peer_of(a) == Some(relay) && !used.contains(&is_quic(a)))
            .cloned()
            .collect();
        for other in others {
            debug!(%relay, addr = %other, "second connection to the relay, for a hole-punching address on its transport");
            let _ = self.swarm.dial(
                DialOpts::peer_id(relay)
                    .condition(PeerCondition::Always)
                    .addresses(vec![other])
                    .build(),
            );
        }
    }

    /// Advertises this node as a member under the namespace's rendezvous key.
    pub(super) fn provide(&mut self) {
        if !self.is_member() || !self.peers.has_relays() {
            return;
        }
        let key = self.records.rendezvous();
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
            debug!(error = %e, "cannot advertise membership in the DHT");
        }
    }

    /// Asks the DHT for the namespace's members.
    pub(super) fn find_members(&mut self) {
        if !self.is_member() || !self.peers.has_relays() || self.member_dials_left() == Some(0) {
            return;
        }
        let key = self.records.rendezvous();
        self.swarm.behaviour_mut().kad.get_providers(key);
    }

    /// Dials a member found in the DHT: through every relay we know, and at
    /// the addresses the DHT has; the first connection that works wins.
    pub(super) fn dial_member(&mut self, peer: PeerId) {
        if peer == self.local_peer()
            || self.swarm.is_connected(&peer)
            || !self.peers.may_dial_member(&peer, Instant::now())
        {
            return;
        }
        self.peers.member_dial_started(peer);
        let circuits = self.circuits_to(peer);
        debug!(%peer, ?circuits, "dialling a member found in the DHT");
        let dialled = self.swarm.dial(
            DialOpts::peer_id(peer)
                .addresses(circuits)
                .extend_addresses_through_behaviour()
                .build(),
        );
        match dialled {
            // Another dial of it is under way; its end settles this one.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            // No address known yet, say: no event will end this dial.
            Err(e) => {
                debug!(%peer, error = %e, "dialling a member not started");
                let _ = self.peers.dial_failed(peer, Instant::now());
            }
        }
    }

    /// Addresses reaching `peer` through each relay this node uses.
    pub(super) fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.peers
            .relays()
            .map(|(relay, r)| circuit(&r.addr, relay, Some(peer)))
            .collect()
    }

    /// What DCUtR reports. After a failed hole punch, try again later on a
    /// fresh relayed connection (timing under load or latency can defeat
    /// one round); the relayed path keeps working meanwhile. Only the peer
    /// with the smaller id retries, so the two sides do not both dial.
    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        let error = match event.result {
            Ok(conn) => {
                info!(%peer, connection = ?conn, "hole punch succeeded: direct connection");
                self.peers.punch_succeeded(&peer);
                self.counters.hole_punch(true);
                return;
            }
            Err(e) => e,
        };
        self.counters.hole_punch(false);
        let retry = self.local_peer() < peer;
        let failed = self.peers.punch_failed(peer, retry, Instant::now());
        if let Some(extra) = failed.close {
            self.swarm.close_connection(extra);
        }
        let round = failed.rounds;
        match failed.retry_in {
            Some(backoff) => {
                info!(%peer, %error, round, "hole punch failed; staying on the relay and trying again in {backoff:?}")
            }
            None => info!(%peer, %error, round, "hole punch failed; staying on the relay"),
        }
    }

    /// A hole-punch retry came due: another relayed connection to run
    /// DCUtR on.
    pub(super) fn punch_again(&mut self, peer: PeerId) {
        let circuits = self.circuits_to(peer);
        if circuits.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Always)
            .addresses(circuits)
            .build();
        self.peers.punch_dialled(&peer, opts.connection_id());
        debug!(%peer, "another relayed connection for another hole punch");
        let _ = self.swarm.dial(opts);
    }

    pub(super) fn on_kad_result(&mut self, result: kad::QueryResult) {
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let left = self.member_dials_left().unwrap_or(usize::MAX);
                let mut found: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| !self.swarm.is_connected(p))
                    .collect();
                found.sort_by_key(|p| std::hash::BuildHasher::hash_one(&self.shuffle, p));
                for peer in found.into_iter().take(left) {
                    self.dial_member(peer);
                }
            }
            kad::QueryResult::GetClosestPeers(Ok(found)) => {
                self.looked_up(&found);
                let providers: HashSet<PeerId> = self
                    .records
                    .registry()
                    .live()
                    .map(|e| e.announcement.provider)
                    .collect();
                // A bounded mesh dials only the links it wants (`links.rs`).
                let full_mesh = self.member_dials_left().is_none();
                for info in found.peers {
                    if !full_mesh
                        || !providers.contains(&info.peer_id)
                        || self.swarm.is_connected(&info.peer_id)
                        || info.addrs.is_empty()
                    {
                        continue;
                    }
                    debug!(peer = %info.peer_id, addrs = ?info.addrs, "dialling a provider found in the DHT");
                    let _ = self.swarm.dial(
                        DialOpts::peer_id(info.peer_id)
                            .addresses(info.addrs)
                            .build(),
                    );
                }
            }
            kad::QueryResult::GetClosestPeers(Err(kad::GetClosestPeersError::Timeout {
                key,
                peers,
            })) => {
                let found = kad::GetClosestPeersOk { key, peers };
                self.looked_up(&found);
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                debug!(error = %e, "advertising membership in the DHT failed")
            }
            _ => {}
        }
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) -> Changed {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                if !self.peers.reservation_accepted(&relay_peer_id) {
                    return Changed::NO;
                }
                info!(relay = %relay_peer_id, "relay reservation accepted: peers can reach us through the relay");
                // Advertise again, now with the relayed address.
                self.provide();
                // Members lost meanwhile (a partition that took the relay
                // too) are reachable through it again.
                self.peers.redial_now(Instant::now());
                Changed::YES
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "connected to a peer through the relay");
                Changed::NO
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "a peer connected to us through the relay");
                Changed::NO
            }
        }
    }

    pub(super) fn on_relay_server_event(&mut self, event: relay::Event) {
        match event {
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
        }
    }
}
