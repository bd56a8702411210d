//! Finding peers: the bootstrap list and its redials, dials asked for by the
//! handle, mDNS, what identify tells Kademlia, and moving to another
//! namespace.

use std::time::Instant;

use libp2p::{
    Multiaddr, PeerId, identify, mdns,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Changed, Node, handle::Event};
use crate::{
    Error, RELAY_HOP_PROTOCOL,
    addr::{group_by_peer, is_loopback, is_quic, is_relayed, peer_of},
    namespace::Namespace,
};

impl Node {
    /// Dials `addrs`: one address of an unknown peer, or any number of
    /// addresses of the same peer, tried concurrently.
    pub(super) fn dial_addrs(
        &mut self,
        addrs: Vec<Multiaddr>,
        reply: Option<oneshot::Sender<Result<PeerId, Error>>>,
    ) {
        let answer = |reply: Option<oneshot::Sender<_>>, result| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        let Some(first) = addrs.first().cloned() else {
            answer(reply, Err(Error::NoAddress));
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
            // Already connected counts as success for the caller.
            Err(_) if peer.is_some_and(|p| self.swarm.is_connected(&p)) => {
                answer(reply, Ok(peer.expect("checked")));
            }
            Err(source) => {
                debug!(?addrs, error = %source, "dial not started");
                answer(
                    reply,
                    Err(Error::Dial {
                        target: crate::error::dial_target(peer, &addrs, &source),
                        cause: Box::new(source),
                    }),
                );
            }
        }
    }

    /// Dials a lost member or relay again at `addrs` (see
    /// `peers/reconnect.rs`), even while an earlier dial of it is still
    /// going: after a partition, that one can hang for seconds on a TCP
    /// connect whose packets went nowhere, and the path that is back (a
    /// circuit through a relay that has just taken the peer's reservation
    /// again) should not wait for it.
    pub(super) fn redial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        debug!(?addrs, "dialling a lost member or relay again");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Disconnected)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "redial not started");
        }
    }

    /// Dials the bootstrap peers that are not connected.
    pub(super) fn redial_bootstrap(&mut self) {
        let now = Instant::now();
        // A member's bootstrap peer that is a member too may have trimmed
        // the link (`links.rs`); it is dialled again only while links are
        // wanted.
        let links_wanted = self.member_dials_left() != Some(0);
        for group in group_by_peer(self.discovery.bootstrap()) {
            let connected = match group.first().and_then(peer_of) {
                Some(peer) => {
                    self.swarm.is_connected(&peer)
                        || self.peers.is_backed_off(&peer, now)
                        || (!links_wanted && self.discovery.is_member(&peer))
                }
                None => self.peers.connected_at(&group),
            };
            if !connected {
                self.dial_addrs(group, None);
            }
        }
    }

    /// See [`crate::NodeHandle::add_bootstrap`].
    pub(super) fn add_bootstrap(&mut self, addrs: Vec<Multiaddr>) -> Changed {
        let added = self.discovery.add(addrs);
        self.redial_bootstrap();
        Changed::from(added)
    }

    /// Switches to another namespace: see [`crate::NodeHandle::join`].
    pub(super) fn join(&mut self, namespace: Namespace, bootstrap: Vec<Multiaddr>) -> Changed {
        info!(namespace = %namespace.name(), secret = namespace.has_secret(), "joining namespace");
        if self.is_member() {
            // Tell the old namespace our services are gone before leaving it.
            if self.records.has_local() {
                let saved = self.records.take_local();
                self.announce();
                self.records.restore_local(saved);
            }
            let old_topic = self.records.topic();
            let _ = self.swarm.behaviour_mut().gossipsub.unsubscribe(&old_topic);
            let old_key = self.records.rendezvous();
            self.swarm.behaviour_mut().kad.stop_providing(&old_key);
        }
        self.records.switch(namespace);
        if self.is_member() {
            let topic = self.records.topic();
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                warn!(error = %e, "subscribing to the new records topic failed");
            }
        }
        self.failures.clear();
        self.peers.clear_back_offs();
        let _ = self.events.send(Event::ServicesChanged);
        self.namespace_changed();
        self.redial_lan();
        let _ = self.discovery.add(bootstrap);
        self.discovery.find_fast();
        self.provide();
        self.find_members();
        Changed::YES
    }

    /// Identify told us what the peer is and where it listens: feed the
    /// addresses to Kademlia, and use the peer as a relay when it is one.
    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) -> Changed {
        // A peer's loopback addresses are only worth trying from the same
        // machine, that is over a loopback connection.
        let local_peer = self.peers.on_loopback(&peer);
        let direct: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_relayed(a) && (local_peer || !is_loopback(a)))
            .cloned()
            .collect();
        for addr in &direct {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        if self.is_member() && self.peers.is_relayed_only(&peer) && !direct.is_empty() {
            self.dial_listen_addrs(peer, direct);
        }
        let mut changed = self.on_observed(peer, &info.observed_addr);
        let is_relay = info.protocols.contains(&RELAY_HOP_PROTOCOL);
        changed |= Changed::from(self.peers.set_agent(&peer, info.agent_version));
        if is_relay {
            changed |= self.use_relay(peer);
        }
        changed
    }

    /// Keeps the QUIC address a peer with a direct connection saw this node
    /// at, as it saw it. The candidates the swarm reports are translated to
    /// the listen port, so they look the same behind a port-randomising NAT
    /// as behind a friendly one; a QUIC connection leaves from the listen
    /// port, so a different port here means the NAT changed it, which is
    /// what `devmesh doctor` tells a member that stays relayed.
    fn on_observed(&mut self, peer: PeerId, observed: &Multiaddr) -> Changed {
        if !is_quic(observed) || is_relayed(observed) || self.peers.is_relayed_only(&peer) {
            return Changed::NO;
        }
        let new = self.addresses.observed(observed.clone());
        if new {
            debug!(%peer, address = %observed, "a peer sees us at");
        }
        Changed::from(new)
    }

    /// Dials a peer reached only through a relay at the addresses it
    /// listens on. A hole punch only tries the addresses the relay and the
    /// peers observed, which for two hosts behind one NAT is the shared
    /// public one, and most home routers do not hairpin; their LAN
    /// addresses reach each other directly. The same goes for a peer with
    /// a public or global IPv6 address: no punch is needed. Where the
    /// addresses lead nowhere (a LAN address of another home), the dial
    /// fails on its own and the relayed connection carries on.
    fn dial_listen_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        debug!(%peer, ?addrs, "relayed only: dialling the addresses the peer listens on");
        let _ = self.swarm.dial(
            DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(addrs)
                .build(),
        );
    }

    /// Dials again the peers mDNS knows on the LAN: after a move into
    /// another namespace (a `join` with a token that names no bootstrap
    /// peer), the members there are among them, and mDNS reports a peer
    /// only once until its record expires.
    fn redial_lan(&mut self) {
        let Some(mdns) = self.swarm.behaviour().mdns.as_ref() else {
            return;
        };
        let known: Vec<PeerId> = mdns.discovered_nodes().copied().collect();
        for peer in known {
            if !self.swarm.is_connected(&peer) {
                debug!(%peer, "dialling a peer mDNS found, after a namespace change");
                // mDNS (and Kademlia) hand the swarm the peer's addresses.
                let _ = self.swarm.dial(DialOpts::peer_id(peer).build());
            }
        }
    }

    /// mDNS found peers on the LAN: dial those not connected.
    pub(super) fn on_mdns(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        let now = Instant::now();
        let links_wanted = self.member_dials_left() != Some(0);
        for (peer, addr) in found {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            if links_wanted
                && !self.swarm.is_connected(&peer)
                && !self.peers.is_backed_off(&peer, now)
            {
                debug!(%peer, %addr, "mDNS discovered a peer");
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
            }
        }
    }
}
