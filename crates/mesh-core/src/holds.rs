//! Long-lived tunnels that keep a peer's relayed connections open.
//!
//! When a hole punch gives a peer a direct connection, its relayed one
//! closes after a grace period. A raw TCP session or an upgraded HTTP
//! connection opened over the relayed connection cannot move to the
//! direct one, so the proxy holds the peer while such a tunnel is open,
//! and the relayed connection closes once nothing holds it.

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
}

impl Holds {
    /// Holds `peer` until the returned guard drops.
    pub(crate) fn hold(self: &Arc<Self>, peer: PeerId) -> Hold {
        *self.lock().entry(peer).or_default() += 1;
        Hold {
            holds: Arc::clone(self),
            peer,
        }
    }

    /// Whether a tunnel holds `peer` now.
    pub(crate) fn held(&self, peer: &PeerId) -> bool {
        self.lock().contains_key(peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut counts = self.holds.lock();
        if let Some(n) = counts.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
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
        assert!(holds.lock().is_empty());
    }
}
