//! Dialling a member again after its connection was lost: a teammate's
//! node that restarts (an update, `devmesh daemon stop && start`, a
//! laptop waking up) listens on the same ports, and the node that had
//! dialled it reaches it again within a second or two, without waiting
//! for discovery. Only the side that dialled has an address to dial back;
//! the other side's node does the same when it was the dialler.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Back-off before the first redial; it doubles each time.
const FIRST: Duration = Duration::from_millis(500);
/// Redials after a loss; the last comes about a minute after it, then
/// discovery (bootstrap, DHT, mDNS) is left to find the peer.
const ATTEMPTS: u32 = 8;

/// The redials still due to a member whose connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconnect {
    /// The addresses this node had dialled it at, with `/p2p/<peer>`.
    addrs: Vec<Multiaddr>,
    attempts: u32,
    at: Instant,
}

impl Reconnect {
    /// Redials of `peer` at `addrs` (the direct addresses this node had
    /// dialled it at), from `now`; none without an address.
    pub(crate) fn after_loss(peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> Option<Self> {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(peer)),
            })
            .collect();
        (!addrs.is_empty()).then(|| Self {
            addrs,
            attempts: 0,
            at: now + FIRST,
        })
    }

    /// The addresses to dial when a redial is due at `now`; `self` then
    /// waits twice as long for the next, and is over (`false`) after the
    /// last.
    pub(crate) fn due(&mut self, now: Instant) -> (Option<Vec<Multiaddr>>, bool) {
        if now < self.at {
            return (None, true);
        }
        self.attempts += 1;
        self.at = now + FIRST * 2u32.pow(self.attempts.min(16));
        (Some(self.addrs.clone()), self.attempts < ATTEMPTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_back_off_and_end() {
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(Reconnect::after_loss(peer, vec![], now).is_none());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut r = Reconnect::after_loss(peer, vec![addr.clone()], now).unwrap();
        assert_eq!(r.due(now), (None, true), "not before the first back-off");
        let (dial, more) = r.due(now + FIRST);
        assert_eq!(dial, Some(vec![addr.with(Protocol::P2p(peer))]));
        assert!(more);
        let mut at = now + FIRST;
        let mut dials = 1;
        loop {
            at += Duration::from_secs(120);
            let (dial, more) = r.due(at);
            dials += usize::from(dial.is_some());
            if !more {
                break;
            }
        }
        assert_eq!(dials, ATTEMPTS as usize);
    }
}
