//! The challenging side of the admission handshake with one peer, as a
//! pure state machine: the event loop feeds it what happened
//! ([`Input`]) and carries out what it answers ([`Action`]). It never
//! touches the swarm, so it is tested without one.
//!
//! A challenge goes out when the first connection to a peer opens. A failed
//! request (lost with a duplicate connection that closed, or timed out) is
//! asked again, up to [`MAX_CHALLENGES`] in all, while the peer stays
//! connected. The first answer to the outstanding challenge decides; any
//! other answer is ignored. When the node moves to another namespace or
//! secret, every verdict but "relay" is void: those peers are disconnected
//! (they are challenged afresh if they connect again).

use libp2p::PeerId;

use super::{AuthRequest, AuthResponse, NONCE_LEN, Rejection, VERSION};
use crate::namespace::Namespace;

/// Challenges sent to one peer at most (one may be lost with a duplicate
/// connection, one may time out).
pub(crate) const MAX_CHALLENGES: u8 = 3;

/// A fresh random challenge nonce.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// Who is challenging whom, for which namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub namespace: &'a Namespace,
    pub local: PeerId,
    pub peer: PeerId,
}

/// What happened, for the handshake with one peer. `R` names an
/// outbound request (libp2p's `OutboundRequestId` in the node).
#[derive(Debug)]
pub(crate) enum Input<R> {
    /// The first connection to the peer opened; `nonce` is fresh.
    Connected { nonce: Nonce },
    /// The challenge given to [`Action::Challenge`] went out as `request`.
    Sent { request: R },
    /// The peer answered `request`.
    Answer { request: R, response: AuthResponse },
    /// `request` failed: timed out, or its connection closed. `unsupported`:
    /// the peer does not speak the protocol. `nonce` is fresh, for a retry.
    Failed {
        request: R,
        unsupported: bool,
        still_connected: bool,
        nonce: Nonce,
    },
    /// The node moved to another namespace, or the same one with another
    /// secret.
    NamespaceChanged,
}

/// What the event loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing (an answer to another request, a finished handshake).
    None,
    /// Send this challenge, then report its id with [`Input::Sent`].
    Challenge(AuthRequest),
    /// The peer proved membership: admit it.
    Admit,
    /// The peer is a relay.
    Relay,
    /// The peer is in another namespace: leave it alone for a while and
    /// disconnect after a grace period.
    Foreign,
    /// The peer failed the proof: report why, leave it alone for a while and
    /// disconnect after a grace period (so it can read our answer).
    Reject(Rejection),
    /// No verdict after every retry: the peer is not admitted.
    GiveUp,
    /// Close the connections to the peer now.
    Disconnect,
}

#[derive(Debug)]
enum Phase<R> {
    Idle,
    /// A challenge about to go out.
    Sending(Nonce),
    /// A challenge out, waiting for its answer.
    Waiting {
        request: R,
        nonce: Nonce,
    },
    /// Decided (admitted, rejected or given up); `relay`: the peer is a
    /// relay, member of no namespace.
    Done {
        relay: bool,
    },
}

/// The handshake with one peer.
#[derive(Debug)]
pub(crate) struct Handshake<R> {
    phase: Phase<R>,
    sent: u8,
}

impl<R> Default for Handshake<R> {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            sent: 0,
        }
    }
}

impl<R: Copy + PartialEq> Handshake<R> {
    /// Whether the handshake came to an end.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// Feeds one event; returns what to do.
    pub(crate) fn on_input(&mut self, input: Input<R>, ctx: Context<'_>) -> Action {
        match input {
            Input::Connected { nonce } => match self.phase {
                Phase::Idle => self.challenge(ctx.namespace, nonce),
                _ => Action::None,
            },
            Input::Sent { request } => {
                if let Phase::Sending(nonce) = self.phase {
                    self.phase = Phase::Waiting { request, nonce };
                }
                Action::None
            }
            Input::Answer { request, response } => match self.phase {
                Phase::Waiting { request: r, nonce } if r == request => {
                    let action = verdict(&nonce, response, ctx);
                    self.phase = Phase::Done {
                        relay: action == Action::Relay,
                    };
                    action
                }
                _ => Action::None,
            },
            Input::Failed {
                request,
                unsupported,
                still_connected,
                nonce,
            } => match self.phase {
                Phase::Waiting { request: r, .. } if r == request => {
                    if !unsupported && still_connected && self.sent < MAX_CHALLENGES {
                        self.challenge(ctx.namespace, nonce)
                    } else {
                        self.phase = Phase::Done { relay: false };
                        Action::GiveUp
                    }
                }
                _ => Action::None,
            },
            Input::NamespaceChanged => match self.phase {
                Phase::Done { relay: true } => Action::None,
                _ => Action::Disconnect,
            },
        }
    }

    fn challenge(&mut self, namespace: &Namespace, nonce: Nonce) -> Action {
        self.phase = Phase::Sending(nonce);
        self.sent += 1;
        Action::Challenge(AuthRequest {
            v: VERSION,
            namespace_id: namespace.id().to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}

/// What the answer to our challenge `nonce` makes of the peer.
fn verdict(nonce: &Nonce, response: AuthResponse, ctx: Context<'_>) -> Action {
    let Context {
        namespace,
        local,
        peer,
    } = ctx;
    match response {
        AuthResponse::Member { proof } => {
            if namespace.verify_proof(nonce, &peer, &local, &proof) {
                Action::Admit
            } else if namespace.has_secret() {
                Action::Reject(Rejection::WrongSecret {
                    namespace: namespace.name().to_owned(),
                    peer,
                })
            } else {
                Action::Reject(Rejection::MissingSecret {
                    namespace: namespace.name().to_owned(),
                    peer,
                })
            }
        }
        AuthResponse::Relay => Action::Relay,
        AuthResponse::OtherNamespace => Action::Foreign,
        AuthResponse::Malformed => Action::Reject(Rejection::Unreadable { peer }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admission::respond, namespace::Secret};

    struct Pair {
        ours: Namespace,
        local: PeerId,
        peer: PeerId,
        hs: Handshake<u64>,
    }

    impl Pair {
        fn new(ours: Namespace) -> Self {
            Self {
                ours,
                local: PeerId::random(),
                peer: PeerId::random(),
                hs: Handshake::default(),
            }
        }

        fn feed(&mut self, input: Input<u64>) -> Action {
            let ctx = Context {
                namespace: &self.ours,
                local: self.local,
                peer: self.peer,
            };
            self.hs.on_input(input, ctx)
        }

        /// Connects and sends the challenge as request `id`.
        fn connect(&mut self, id: u64) -> AuthRequest {
            let Action::Challenge(request) = self.feed(Input::Connected {
                nonce: [id as u8; 32],
            }) else {
                panic!("a new peer is challenged");
            };
            assert_eq!(self.feed(Input::Sent { request: id }), Action::None);
            request
        }

        /// The peer's answer `response` to request `id` arrives.
        fn answer(&mut self, id: u64, response: AuthResponse) -> Action {
            self.feed(Input::Answer {
                request: id,
                response,
            })
        }

        /// How the peer, a member of `theirs`, answers `request`.
        fn answer_from(&self, theirs: Option<&Namespace>, request: &AuthRequest) -> AuthResponse {
            respond(theirs, &self.peer, &self.local, request)
        }
    }

    #[test]
    fn a_member_with_the_secret_is_admitted() {
        let secret = Secret::generate();
        let mut p = Pair::new(Namespace::new("team", Some(&secret)));
        let request = p.connect(1);
        assert_eq!(request.namespace_id, p.ours.id().to_vec());
        assert_eq!(request.nonce.len(), NONCE_LEN);
        let response = p.answer_from(Some(&Namespace::new("team", Some(&secret))), &request);
        assert_eq!(p.answer(1, response), Action::Admit);
        assert!(p.hs.is_done());
        // A late second connection does not start another round.
        assert_eq!(p.feed(Input::Connected { nonce: [9; 32] }), Action::None);
    }

    #[test]
    fn a_wrong_or_missing_secret_is_rejected_with_its_reason() {
        let mut p = Pair::new(Namespace::new("team", Some(&Secret::generate())));
        let request = p.connect(1);
        let other = Namespace::new("team", Some(&Secret::generate()));
        let response = p.answer_from(Some(&other), &request);
        let action = p.answer(1, response);
        let Action::Reject(reason) = action else {
            panic!("{action:?}")
        };
        assert_eq!(reason.peer(), p.peer);
        assert!(
            reason
                .to_string()
                .starts_with("secret does not match namespace team")
        );

        let mut p = Pair::new(Namespace::new("team", None));
        let request = p.connect(1);
        let response = p.answer_from(Some(&other), &request);
        let action = p.answer(1, response);
        let Action::Reject(reason) = action else {
            panic!("{action:?}")
        };
        assert!(
            reason
                .to_string()
                .contains("has a secret and this node has none")
        );
    }

    #[test]
    fn a_proof_for_another_nonce_or_peer_is_rejected() {
        let ns = Namespace::new("team", None);
        let mut p = Pair::new(ns.clone());
        let mut request = p.connect(1);
        request.nonce = vec![7; NONCE_LEN];
        let replayed = p.answer_from(Some(&ns), &request);
        assert!(matches!(
            p.answer(1, replayed),
            Action::Reject(Rejection::MissingSecret { .. })
        ));
    }

    #[test]
    fn foreign_peers_relays_and_unreadable_requests() {
        let mut p = Pair::new(Namespace::new("team", None));
        let request = p.connect(1);
        let response = p.answer_from(Some(&Namespace::new("other", None)), &request);
        assert_eq!(response, AuthResponse::OtherNamespace);
        assert_eq!(p.answer(1, response), Action::Foreign);

        let mut p = Pair::new(Namespace::new("team", None));
        let request = p.connect(1);
        let response = p.answer_from(None, &request);
        assert_eq!(p.answer(1, response), Action::Relay);

        let mut p = Pair::new(Namespace::new("team", None));
        let mut request = p.connect(1);
        request.v = 2;
        let response = p.answer_from(Some(&Namespace::new("team", None)), &request);
        assert_eq!(response, AuthResponse::Malformed);
        assert_eq!(
            p.answer(1, response),
            Action::Reject(Rejection::Unreadable { peer: p.peer })
        );
    }

    #[test]
    fn a_failed_challenge_is_retried_then_given_up() {
        let mut p = Pair::new(Namespace::new("team", None));
        p.connect(1);
        let failed = |request, still_connected| Input::Failed {
            request,
            unsupported: false,
            still_connected,
            nonce: [request as u8 + 1; 32],
        };
        // A failure of a request that is not outstanding changes nothing.
        assert_eq!(p.feed(failed(5, true)), Action::None);
        for id in 1..u64::from(MAX_CHALLENGES) {
            let Action::Challenge(again) = p.feed(failed(id, true)) else {
                panic!("retry {id}")
            };
            assert_eq!(again.nonce, vec![id as u8 + 1; 32], "a fresh nonce");
            p.feed(Input::Sent { request: id + 1 });
        }
        assert_eq!(
            p.feed(failed(u64::from(MAX_CHALLENGES), true)),
            Action::GiveUp
        );
        assert!(p.hs.is_done());

        // Disconnected, or the peer does not speak the protocol: no retry.
        let mut p = Pair::new(Namespace::new("team", None));
        p.connect(1);
        assert_eq!(p.feed(failed(1, false)), Action::GiveUp);
        let mut p = Pair::new(Namespace::new("team", None));
        p.connect(1);
        let unsupported = Input::Failed {
            request: 1,
            unsupported: true,
            still_connected: true,
            nonce: [0; 32],
        };
        assert_eq!(p.feed(unsupported), Action::GiveUp);
    }

    #[test]
    fn an_answer_to_an_old_challenge_is_ignored() {
        let ns = Namespace::new("team", None);
        let mut p = Pair::new(ns.clone());
        let first = p.connect(1);
        let Action::Challenge(_) = p.feed(Input::Failed {
            request: 1,
            unsupported: false,
            still_connected: true,
            nonce: [2; 32],
        }) else {
            panic!("retried")
        };
        p.feed(Input::Sent { request: 2 });
        let late = p.answer_from(Some(&ns), &first);
        assert_eq!(p.answer(1, late), Action::None);
        assert!(!p.hs.is_done());
    }

    #[test]
    fn a_new_namespace_or_secret_disconnects_all_but_relays() {
        let ns = Namespace::new("team", None);
        let mut member = Pair::new(ns.clone());
        let request = member.connect(1);
        let response = member.answer_from(Some(&ns), &request);
        assert_eq!(member.answer(1, response), Action::Admit);
        assert_eq!(member.feed(Input::NamespaceChanged), Action::Disconnect);

        let mut relay = Pair::new(ns.clone());
        let request = relay.connect(1);
        let response = relay.answer_from(None, &request);
        assert_eq!(relay.answer(1, response), Action::Relay);
        assert_eq!(relay.feed(Input::NamespaceChanged), Action::None);

        // Still waiting for an answer: the challenge was for the old one.
        let mut pending = Pair::new(ns);
        pending.connect(1);
        assert_eq!(pending.feed(Input::NamespaceChanged), Action::Disconnect);
    }
}
