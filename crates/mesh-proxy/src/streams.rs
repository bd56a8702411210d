//! How many tunnel streams the provider side serves at once: in all, and
//! from one peer, so that a member that opens thousands of streams takes at
//! most its share and the others are still served.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use mesh_core::PeerId;

/// Most tunnel streams served at once; more are dropped with a log line.
pub const MAX_TUNNEL_STREAMS: usize = 1024;
/// Most tunnel streams served at once for one peer.
pub const MAX_TUNNEL_STREAMS_PER_PEER: usize = 256;

/// Which limit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// [`MAX_TUNNEL_STREAMS`].
    All,
    /// [`MAX_TUNNEL_STREAMS_PER_PEER`].
    Peer,
}

/// A refused stream: which limit, and whether it is the first refusal
/// since the peer was last admitted a stream (log only that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub limit: Limit,
    pub first: bool,
}

#[derive(Debug, Default)]
struct Open {
    all: usize,
    /// Per peer: streams open, and whether one was refused since.
    peers: HashMap<PeerId, (usize, bool)>,
}

/// The open tunnel streams, counted in all and per peer.
#[derive(Debug)]
pub(crate) struct StreamBudget {
    all: usize,
    per_peer: usize,
    open: Mutex<Open>,
}

impl Default for StreamBudget {
    fn default() -> Self {
        Self::new(MAX_TUNNEL_STREAMS, MAX_TUNNEL_STREAMS_PER_PEER)
    }
}

impl StreamBudget {
    pub(crate) fn new(all: usize, per_peer: usize) -> Self {
        Self {
            all,
            per_peer,
            open: Mutex::default(),
        }
    }

    /// A permit for one more stream from `peer`, held while it is served.
    pub(crate) fn admit(self: &Arc<Self>, peer: PeerId) -> Result<StreamPermit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let all = open.all;
        let (mine, refused) = open.peers.entry(peer).or_default();
        let limit = if *mine >= self.per_peer {
            Limit::Peer
        } else if all >= self.all {
            Limit::All
        } else {
            *mine += 1;
            *refused = false;
            open.all += 1;
            return Ok(StreamPermit {
                budget: self.clone(),
                peer,
            });
        };
        let first = !std::mem::replace(refused, true);
        if *mine == 0 {
            open.peers.remove(&peer);
        }
        Err(Refused { limit, first })
    }

    fn release(&self, peer: &PeerId) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.all -= 1;
        if let Some((mine, _)) = open.peers.get_mut(peer) {
            *mine -= 1;
            if *mine == 0 {
                open.peers.remove(peer);
            }
        }
    }
}

/// One stream counted in a [`StreamBudget`] until dropped.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    budget: Arc<StreamBudget>,
    peer: PeerId,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.budget.release(&self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_its_share_and_the_others_are_still_served() {
        let budget = Arc::new(StreamBudget::new(5, 3));
        let (hog, other) = (PeerId::random(), PeerId::random());
        let mut held: Vec<_> = (0..3).map(|_| budget.admit(hog).unwrap()).collect();
        let refused = budget.admit(hog).unwrap_err();
        assert_eq!((refused.limit, refused.first), (Limit::Peer, true));
        assert!(!budget.admit(hog).unwrap_err().first, "logged once");
        held.push(budget.admit(other).unwrap());
        held.push(budget.admit(other).unwrap());
        let refused = budget.admit(other).unwrap_err();
        assert_eq!((refused.limit, refused.first), (Limit::All, true));
        // A stream that ends makes room, and the next refusal is logged again.
        held.remove(0);
        held.push(budget.admit(hog).unwrap());
        assert!(budget.admit(hog).unwrap_err().first);
        drop(held);
        let open = budget.open.lock().unwrap();
        assert_eq!(open.all, 0);
        assert!(open.peers.is_empty() || open.peers.values().all(|(n, _)| *n == 0));
    }
}
