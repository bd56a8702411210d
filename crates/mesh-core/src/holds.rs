//! Tunnels that keep a peer's connections open.
//!
//! When a hole punch gives a peer a direct connection, its relayed one
//! closes after a grace period. A raw TCP session or an upgraded HTTP
//! connection opened over the relayed connection cannot move to the
//! direct one, so the proxy holds the peer while such a tunnel is open,
//! and the relayed connection closes once nothing holds it.
//!
//! In a team larger than the full mesh (`peers/links.rs`) a node trims its
//! member connections; every open tunnel stream, pooled ones included,
//! marks its peer's link as in use ([`LinkUse`]), and a link in use is
//! never trimmed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use libp2p::PeerId;

/// How many tunnels hold each peer. Shared by the node's handles (which
/// take holds) and its loop (which asks before closing a relayed
/// connection).
#[derive(Debug, Default)]
pub struct Holds {
    counts: Mutex<HashMap<PeerId, usize>>,
    uses: Mutex<HashMap<PeerId, usize>>,
}

impl Holds {
    /// Holds `peer` until the returned guard drops.
    pub(crate) fn hold(self: &Arc<Self>, peer: PeerId) -> Hold {
        add(&self.counts, peer);
        Hold {
            holds: Arc::clone(self),
            peer,
        }
    }

    /// Whether a tunnel holds `peer` now.
    pub(crate) fn held(&self, peer: &PeerId) -> bool {
        lock(&self.counts).contains_key(peer)
    }

    /// Marks the link to `peer` in use until the returned guard drops.
    pub(crate) fn use_link(self: &Arc<Self>, peer: PeerId) -> LinkUse {
        add(&self.uses, peer);
        LinkUse {
            holds: Arc::clone(self),
            peer,
        }
    }

    /// Whether a tunnel to or from `peer` is open now.
    pub(crate) fn in_use(&self, peer: &PeerId) -> bool {
        lock(&self.uses).contains_key(peer)
    }
}

fn lock(
    counts: &Mutex<HashMap<PeerId, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<PeerId, usize>> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

fn add(counts: &Mutex<HashMap<PeerId, usize>>, peer: PeerId) {
    *lock(counts).entry(peer).or_default() += 1;
}

fn remove(counts: &Mutex<HashMap<PeerId, usize>>, peer: &PeerId) {
    let mut counts = lock(counts);
    if let Some(n) = counts.get_mut(peer) {
        *n -= 1;
        if *n == 0 {
            counts.remove(peer);
        }
    }
}

/// An open tunnel stream to or from a peer: while it lives, the node does
/// not trim its link to the peer.
#[derive(Debug)]
#[must_use = "the use ends when this is dropped"]
pub struct LinkUse {
    holds: Arc<Holds>,
    peer: PeerId,
}

impl LinkUse {
    /// The peer whose link is in use.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

impl Drop for LinkUse {
    fn drop(&mut self) {
        remove(&self.holds.uses, &self.peer);
    }
}

/// A long-lived tunnel to a peer: while it lives, the peer's relayed
/// connections stay open even when a direct one exists.
#[derive(Debug)]
#[must_use = "the hold ends when this is dropped"]
pub struct Hold {
    holds: Arc<Holds>,
    peer: PeerId,
}

impl Drop for Hold {
    fn drop(&mut self) {
        remove(&self.holds.counts, &self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_held_until_its_last_hold_drops() {
        let holds = Arc::new(Holds::default());
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = holds.hold(a);
        let second = holds.hold(a);
        assert!(holds.held(&a));
        assert!(!holds.held(&b));
        drop(first);
        assert!(holds.held(&a));
        drop(second);
        assert!(!holds.held(&a));
        assert!(lock(&holds.counts).is_empty());
    }

    #[test]
    fn a_link_is_in_use_while_a_tunnel_on_it_lives_and_apart_from_holds() {
        let holds = Arc::new(Holds::default());
        let peer = PeerId::random();
        let first = holds.use_link(peer);
        let second = holds.use_link(peer);
        assert!(holds.in_use(&peer) && !holds.held(&peer));
        drop(first);
        assert!(holds.in_use(&peer));
        drop(second);
        assert!(!holds.in_use(&peer));
    }
}
