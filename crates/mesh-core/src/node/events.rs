//! The swarm's events, dispatched to the concern that handles them;
//! connections opening and closing are handled here.

use std::time::Instant;

use libp2p::{
    Multiaddr, PeerId,
    core::ConnectedPoint,
    gossipsub, request_response,
    swarm::{ConnectionId, SwarmEvent},
};
use tracing::{debug, info, warn};

use super::{Changed, Node, handle::Event};
use crate::{
    Error,
    admission::PeerKind,
    behaviour::BehaviourEvent,
    peers::{Conn, RELAYED_GRACE},
};

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Changed {
        match event {
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
                    ConnectedPoint::Listener { local_addr, .. } if relayed => local_addr.clone(),
                    other => other.get_remote_address().clone(),
                };
                let conn = Conn {
                    addr,
                    relayed,
                    dialer: endpoint.is_dialer(),
                };
                self.on_connection(peer_id, connection_id, conn, num_established.get())
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                // Whether the team is larger than the full mesh, known
                // before the peer leaves the table.
                let bounded = self.bounded();
                let closed = self.peers.closed(peer_id, connection_id, Instant::now());
                if closed.last != (num_established == 0) {
                    debug!(peer = %peer_id, num_established, "the peer table and the swarm disagree on the connections");
                }
                if num_established == 0 {
                    if closed.was_relay {
                        info!(relay = %peer_id, "lost the connection to a relay");
                    }
                    info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    if bounded {
                        // A link of a bounded mesh: trimmed by either side,
                        // not a member gone (`links.rs`). Its records live
                        // by their TTL; missing links are dialled anew.
                        self.peers.forget_reconnect(&peer_id);
                    } else if self.records.forget(&peer_id, Instant::now()) {
                        info!(peer = %peer_id, "withdrew the services of the disconnected peer");
                        let _ = self.events.send(Event::ServicesChanged);
                    }
                    let _ = self.events.send(Event::PeerDisconnected { peer: peer_id });
                }
                Changed::YES
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(peer) = peer_id
                    && self.discovery.is_bootstrap(&peer)
                    && self.discovery.bootstrap_failed(peer)
                {
                    let causes = crate::error::dial_causes(&error).join("; ");
                    warn!(
                        bootstrap = %crate::error::dial_target(Some(peer), &[], &error),
                        cause = %causes,
                        "cannot reach a bootstrap peer; trying again every few seconds"
                    );
                }
                if let Some(peer) = peer_id
                    && let Some(backoff) = self.peers.dial_failed(peer, Instant::now())
                {
                    debug!(%peer, ?backoff, "member from the DHT unreachable; trying again later");
                }
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        target: crate::error::dial_target(peer_id, &[], &error),
                        cause: Box::new(error),
                    }));
                }
                Changed::NO
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(%send_back_addr, %error, "incoming connection failed");
                Changed::NO
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            other => self.on_address_event(other),
        }
    }

    fn on_connection(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        conn: Conn,
        established: u32,
    ) -> Changed {
        if let Some(reply) = self.pending_dials.remove(&id) {
            let _ = reply.send(Ok(peer));
        }
        if self.discovery.bootstrap_reached(&peer) {
            info!(%peer, "bootstrap peer reached again");
        }
        if conn.dialer && !conn.relayed {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, conn.addr.clone());
        }
        let initial = if self.is_member() {
            PeerKind::Pending
        } else {
            PeerKind::Client
        };
        let (addr, relayed) = (conn.addr.clone(), conn.relayed);
        let connected = self
            .peers
            .connected(peer, id, conn, initial, Instant::now());
        if connected.extra && !self.holds.held(&peer) {
            debug!(%peer, "closing a second direct connection this node dialled (an AutoNAT dial-back, say)");
            self.swarm.close_connection(id);
        }
        if connected.replaces_relayed {
            // A direct connection replaces the relayed ones: they close
            // after a grace period that lets the tunnels on them finish,
            // and from then on every tunnel uses the direct path.
            info!(%peer, %addr, "direct connection established; the relayed one closes in {RELAYED_GRACE:?}, or once no TCP session holds it");
        }
        if established == 1 {
            self.on_first_connection(peer, addr, relayed);
        }
        Changed::YES
    }

    fn on_first_connection(&mut self, peer: PeerId, addr: Multiaddr, relayed: bool) {
        info!(%peer, %addr, relayed, "peer connected");
        if self.is_member() {
            let _ = self.challenge(peer);
        }
        let _ = self.events.send(Event::PeerConnected {
            peer,
            addr,
            relayed,
        });
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) -> Changed {
        match event {
            BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id, info, ..
            }) => self.on_identify(peer_id, info),
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                if self.peers.set_rtt(&peer, connection, rtt, Instant::now()) {
                    Changed::LATER
                } else {
                    Changed::NO
                }
            }
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(failure),
            }) => {
                self.on_ping_failure(peer, connection, &failure);
                Changed::NO
            }
            BehaviourEvent::Auth(event) => self.on_auth_event(event),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            // In a bounded mesh links come and go, and the new peer's sync
            // brings it our record anyway: announcing to the whole team for
            // every link would cost every member.
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic == self.records.topic().hash()
                    && self.records.has_local()
                    && !self.bounded() =>
            {
                debug!(peer = %peer_id, "peer subscribed to our namespace; announcing");
                self.announce();
                Changed::NO
            }
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Mdns(event) => {
                self.on_mdns(event);
                Changed::NO
            }
            BehaviourEvent::Kad(libp2p::kad::Event::OutboundQueryProgressed { result, .. }) => {
                self.on_kad_result(result);
                Changed::NO
            }
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => {
                self.on_relay_server_event(event);
                Changed::NO
            }
            BehaviourEvent::Autonat(event) => self.on_autonat(event),
            BehaviourEvent::Dcutr(event) => {
                self.on_dcutr(event);
                Changed::NO
            }
            _ => Changed::NO,
        }
    }

    /// A failed ping. A connection that stops answering is closed by the
    /// peer table's silence check, not here; a peer without ping is not
    /// watched at all.
    fn on_ping_failure(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        failure: &libp2p::ping::Failure,
    ) {
        if matches!(failure, libp2p::ping::Failure::Unsupported) {
            self.peers.no_pings(connection);
        }
        debug!(%peer, %failure, "ping failed");
    }

    fn on_sync_event(
        &mut self,
        event: request_response::Event<crate::SyncRequest, crate::SyncResponse>,
    ) -> Changed {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    self.answer_sync(peer, channel);
                    Changed::NO
                }
                request_response::Message::Response { response, .. } => {
                    self.on_sync_response(peer, response)
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                error: request_response::OutboundFailure::Io(error),
                ..
            } => {
                // What the codec refused: an answer over the size limit or
                // one that does not decode.
                warn!(%peer, %error, "dropped an unreadable record sync answer");
                self.counters.sync_entry(false);
                Changed::NO
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "record sync failed");
                Changed::NO
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "record sync request failed");
                Changed::NO
            }
            request_response::Event::ResponseSent { .. } => Changed::NO,
        }
    }
}
