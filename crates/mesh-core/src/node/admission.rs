//! Carrying out the admission handshake: the event loop feeds the per-peer
//! [`Handshake`](crate::admission::handshake::Handshake) and does what it
//! answers (send a challenge, admit, reject, disconnect after a grace).

use std::time::{Duration, Instant};

use libp2p::{
    PeerId,
    request_response::{self, OutboundRequestId},
};
use tracing::{debug, info, warn};

use super::{Changed, Node, handle::Event};
use crate::{
    admission::{
        self, AuthRequest, AuthResponse, NONCE_LEN, PeerKind, Rejection,
        budget::Verdict,
        handshake::{Action, Context, Input, Nonce},
    },
    snapshot::AdmissionFailure,
};

/// How long a rejected peer stays connected so it can read our answer.
const REJECT_GRACE: Duration = Duration::from_secs(1);
/// Admission failures kept for `status` and `doctor`.
const MAX_FAILURES: usize = 8;

fn fresh_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    nonce
}

impl Node {
    /// Feeds the handshake with `peer` and carries out what it decides.
    fn handshake(&mut self, peer: PeerId, input: Input<OutboundRequestId>) -> Changed {
        let local = self.local_peer();
        let namespace = self.records.namespace().clone();
        let ctx = Context {
            namespace: &namespace,
            local,
            peer,
        };
        let Some(entry) = self.peers.get_mut(&peer) else {
            return Changed::NO;
        };
        let action = entry.handshake.on_input(input, ctx);
        self.carry_out(peer, action)
    }

    fn carry_out(&mut self, peer: PeerId, action: Action) -> Changed {
        let now = Instant::now();
        match action {
            Action::None => Changed::NO,
            Action::Challenge(request) => {
                let request = self.swarm.behaviour_mut().auth.send_request(&peer, request);
                self.handshake(peer, Input::Sent { request })
            }
            Action::Admit => {
                let _ = self.peers.set_kind(&peer, PeerKind::Member);
                self.discovery.admitted(peer);
                info!(%peer, namespace = %self.records.namespace().name(), "peer admitted as a member");
                self.request_sync(peer);
                let _ = self.events.send(Event::PeerAdmitted { peer });
                // The peer's gossip subscription may have arrived before it
                // was admitted; make sure it hears us now (a bounded mesh
                // leaves that to the sync, as for `Subscribed`).
                if !self.bounded() {
                    self.announce_if_providing();
                }
                Changed::YES
            }
            Action::Relay => {
                debug!(%peer, "peer is a relay");
                Changed::from(self.peers.set_kind(&peer, PeerKind::Relay))
            }
            Action::Foreign => {
                info!(%peer, "peer is in another namespace; disconnecting");
                self.peers.back_off(peer, now);
                self.peers.disconnect_after(&peer, REJECT_GRACE, now);
                Changed::from(self.peers.set_kind(&peer, PeerKind::Foreign))
            }
            Action::GiveUp => {
                debug!(%peer, "peer does not prove membership; not admitted");
                Changed::from(self.peers.set_kind(&peer, PeerKind::Foreign))
            }
            Action::Reject(reason) => {
                let _ = self.peers.set_kind(&peer, PeerKind::Rejected);
                self.admission_failed(peer, reason, now);
                Changed::YES
            }
            Action::Disconnect => {
                let _ = self.swarm.disconnect_peer_id(peer);
                Changed::NO
            }
        }
    }

    fn admission_failed(&mut self, peer: PeerId, reason: Rejection, now: Instant) {
        let inbound = self.peers.came_to_us(&peer);
        let text = reason.to_string();
        // Once per peer and reason: an outsider that keeps trying is
        // worth one line, not one per attempt.
        if self
            .failures
            .iter()
            .any(|f| f.peer == peer && f.reason == text)
        {
            debug!(%peer, %reason, inbound, "admission failed again; disconnecting");
        } else if inbound {
            warn!(%peer, %reason, "admission failed for a peer that connected to this node (its problem, not ours); disconnecting");
        } else {
            warn!(%peer, %reason, "admission failed; disconnecting");
        }
        self.failures.retain(|f| f.peer != peer);
        self.failures.push_back(AdmissionFailure {
            peer,
            reason: text,
            inbound,
        });
        while self.failures.len() > MAX_FAILURES {
            self.failures.pop_front();
        }
        self.peers.back_off(peer, now);
        self.peers.disconnect_after(&peer, REJECT_GRACE, now);
        let _ = self.events.send(Event::AdmissionFailed { peer, reason });
    }

    /// The node moved to another namespace or secret: members of the old
    /// one (and peers still being challenged) are disconnected; relays stay.
    pub(super) fn namespace_changed(&mut self) {
        for peer in self.peers.ids() {
            let _ = self.handshake(peer, Input::NamespaceChanged);
        }
    }

    /// Starts the admission handshake with a newly connected peer.
    pub(super) fn challenge(&mut self, peer: PeerId) -> Changed {
        let nonce = fresh_nonce();
        self.handshake(peer, Input::Connected { nonce })
    }

    /// Our answer to a peer's challenge.
    fn answer(&self, peer: PeerId, request: &AuthRequest) -> AuthResponse {
        let namespace = self.is_member().then(|| self.records.namespace());
        admission::respond(namespace, &self.local_peer(), &peer, request)
    }

    pub(super) fn on_auth_event(
        &mut self,
        event: request_response::Event<AuthRequest, AuthResponse>,
    ) -> Changed {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                match self.answers.take(peer, Instant::now()) {
                    Verdict::Answer => {
                        let response = self.answer(peer, &request);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .auth
                            .send_response(channel, response);
                    }
                    // Dropping the channel closes the stream unanswered.
                    Verdict::FirstRefusal => {
                        warn!(%peer, "admission challenges in a loop; not answering this peer for a while");
                    }
                    Verdict::Refuse => {}
                }
                Changed::NO
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.handshake(
                peer,
                Input::Answer {
                    request: request_id,
                    response,
                },
            ),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "admission request failed");
                let unsupported = matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                );
                let still_connected = self.swarm.is_connected(&peer);
                let input = Input::Failed {
                    request: request_id,
                    unsupported,
                    still_connected,
                    nonce: fresh_nonce(),
                };
                self.handshake(peer, input)
            }
            // A challenge this node chose not to answer (see above).
            request_response::Event::InboundFailure {
                error: request_response::InboundFailure::ResponseOmission,
                ..
            } => Changed::NO,
            // Malformed ones count against the same budget, so that a loop
            // of them is logged once, not once each.
            request_response::Event::InboundFailure { peer, error, .. } => {
                match self.answers.take(peer, Instant::now()) {
                    Verdict::Answer => {
                        warn!(%peer, %error, "dropped a malformed admission request")
                    }
                    Verdict::FirstRefusal => {
                        warn!(%peer, %error, "admission challenges in a loop; not answering this peer for a while");
                    }
                    Verdict::Refuse => {}
                }
                Changed::NO
            }
            request_response::Event::ResponseSent { .. } => Changed::NO,
        }
    }
}
