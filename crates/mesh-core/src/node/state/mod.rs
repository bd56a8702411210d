//! The state the event loop owns, apart from the swarm and the peer table:
//! each piece has one owner here, and the `impl Node` files change it
//! through its methods.

mod records;

use std::time::{Duration, Instant};

use libp2p::Multiaddr;

pub(super) use self::records::{Accepted, Records};
use crate::snapshot::Reachability;

/// How long after joining or meeting a relay the quick member lookups go on.
const FIND_FAST_FOR: Duration = Duration::from_secs(60);

/// What discovery owns: the bootstrap list as it is now (the configured
/// one, plus what `join` and `add_bootstrap` added) and how long quick
/// member lookups go on.
pub(super) struct Discovery {
    bootstrap: Vec<Multiaddr>,
    find_fast_until: Instant,
    /// Bootstrap peers whose failed dial was logged (once per outage).
    unreachable: std::collections::HashSet<libp2p::PeerId>,
    /// Bootstrap peers admitted as members (not relays).
    members: std::collections::HashSet<libp2p::PeerId>,
}

impl Discovery {
    pub(super) fn new(bootstrap: Vec<Multiaddr>) -> Self {
        Self {
            bootstrap,
            find_fast_until: Instant::now(),
            unreachable: std::collections::HashSet::new(),
            members: std::collections::HashSet::new(),
        }
    }

    /// `peer` was admitted as a member; remembered when it is a bootstrap
    /// peer.
    pub(super) fn admitted(&mut self, peer: libp2p::PeerId) {
        if self.is_bootstrap(&peer) {
            self.members.insert(peer);
        }
    }

    /// Whether bootstrap peer `peer` was admitted as a member before.
    pub(super) fn is_member(&self, peer: &libp2p::PeerId) -> bool {
        self.members.contains(peer)
    }

    /// Whether `peer` is a bootstrap peer.
    pub(super) fn is_bootstrap(&self, peer: &libp2p::PeerId) -> bool {
        self.bootstrap
            .iter()
            .any(|a| crate::peer_of(a).as_ref() == Some(peer))
    }

    /// A dial of bootstrap peer `peer` failed: true the first time since it
    /// was last reached (worth a warning), false while it stays down.
    pub(super) fn bootstrap_failed(&mut self, peer: libp2p::PeerId) -> bool {
        self.unreachable.insert(peer)
    }

    /// Bootstrap peer `peer` is reached: its next failure is news again.
    pub(super) fn bootstrap_reached(&mut self, peer: &libp2p::PeerId) -> bool {
        self.unreachable.remove(peer)
    }

    pub(super) fn bootstrap(&self) -> &[Multiaddr] {
        &self.bootstrap
    }

    pub(super) fn find_fast_until(&self) -> Instant {
        self.find_fast_until
    }

    /// Looks for members quickly for a while (after joining or meeting a
    /// relay).
    pub(super) fn find_fast(&mut self) {
        self.find_fast_until = Instant::now() + FIND_FAST_FOR;
    }

    /// Adds bootstrap peers; returns whether any was new.
    pub(super) fn add(&mut self, addrs: Vec<Multiaddr>) -> bool {
        let mut added = false;
        for addr in addrs {
            if !self.bootstrap.contains(&addr) {
                self.bootstrap.push(addr);
                added = true;
            }
        }
        added
    }
}

/// Observed addresses kept (the latest ones).
const MAX_OBSERVED: usize = 8;

/// Where the node listens and how others see it.
#[derive(Debug, Default)]
pub(super) struct Addresses {
    pub(super) listen: Vec<Multiaddr>,
    pub(super) observed: Vec<Multiaddr>,
    pub(super) reachability: Reachability,
}

impl Addresses {
    /// Records an address peers see this node at. Returns whether it is new.
    pub(super) fn observed(&mut self, addr: Multiaddr) -> bool {
        if self.observed.contains(&addr) {
            return false;
        }
        self.observed.push(addr);
        if self.observed.len() > MAX_OBSERVED {
            self.observed.remove(0);
        }
        true
    }
}

#[cfg(test)]
pub(super) use self::records::tests::service as test_service;
