//! Dialling a member or a relay again after its connection was lost: a
//! teammate's node that restarts (an update, `devmesh daemon stop &&
//! start`, a laptop waking up) listens on the same ports, and the node that
//! had dialled it reaches it again within a second or two, without waiting
//! for discovery. Only the side that dialled has an address to dial back;
//! the other side's node does the same when it was the dialler. After a
//! partition (a network that went away for a while), the redials keep
//! coming every few seconds, so that the link is back within seconds of
//! the path; members behind NATs are also dialled through the relays (the
//! event loop adds the circuits), and all redials come due at once when a
//! relay reservation is accepted.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Back-off before the first redial; it doubles each time, up to [`GAP`].
const FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two redials.
const GAP: Duration = Duration::from_secs(4);
/// How long after the loss redials go on; then discovery (bootstrap, DHT,
/// mDNS) is left to find the peer.
const FOR: Duration = Duration::from_secs(120);

/// The redials still due to a peer whose connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconnect {
    /// The addresses this node had dialled it at, with `/p2p/<peer>`.
    addrs: Vec<Multiaddr>,
    /// The wait before the next redial after this one.
    gap: Duration,
    at: Instant,
    until: Instant,
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
            gap: FIRST,
            at: now + FIRST,
            until: now + FOR,
        })
    }

    /// The addresses to dial when a redial is due at `now`; `self` then
    /// waits twice as long for the next (at most [`GAP`]), and is over
    /// (`false`) once [`FOR`] has passed since the loss.
    pub(crate) fn due(&mut self, now: Instant) -> (Option<Vec<Multiaddr>>, bool) {
        if now < self.at {
            return (None, true);
        }
        self.gap = (self.gap * 2).min(GAP);
        self.at = now + self.gap;
        (Some(self.addrs.clone()), self.at < self.until)
    }

    /// Makes the next redial due at `now`.
    pub(crate) fn hurry(&mut self, now: Instant) {
        self.at = self.at.min(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_back_off_up_to_a_gap_and_end() {
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(Reconnect::after_loss(peer, vec![], now).is_none());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut r = Reconnect::after_loss(peer, vec![addr.clone()], now).unwrap();
        assert_eq!(r.due(now), (None, true), "not before the first back-off");
        let (dial, more) = r.due(now + FIRST);
        assert_eq!(dial, Some(vec![addr.with(Protocol::P2p(peer))]));
        assert!(more);
        // Due at every gap, never more than `GAP` apart, until `FOR`.
        let mut at = now + FIRST;
        let mut dials = vec![at];
        loop {
            at = r.at;
            let (dial, more) = r.due(at);
            assert!(dial.is_some());
            dials.push(at);
            if !more {
                break;
            }
        }
        let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..3], [FIRST * 2, FIRST * 4, GAP]);
        assert!(gaps.iter().all(|g| *g <= GAP));
        assert!(at - now <= FOR && at - now > FOR - GAP, "{:?}", at - now);
    }

    #[test]
    fn a_hurried_redial_is_due_at_once() {
        let peer = PeerId::random();
        let now = Instant::now();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut r = Reconnect::after_loss(peer, vec![addr], now).unwrap();
        let _ = r.due(now + FIRST);
        let later = now + FIRST + Duration::from_millis(10);
        assert_eq!(r.due(later).0, None);
        r.hurry(later);
        assert!(r.due(later).0.is_some());
    }
}
