//! Dialling a member or a relay again after its connection was lost: a
//! teammate's node that restarts (an update, `devmesh daemon stop &&
//! start`, a laptop waking up) listens on the same ports, and the node that
//! had dialled it reaches it again within a second or two, without waiting
//! for discovery. Only the side that dialled has a direct address to dial
//! back; both sides dial a lost member through the relays too (the event
//! loop adds the circuits), which is the only way back to a member behind
//! a NAT. After a partition (a network that went away for a while), the
//! redials keep coming every few seconds, so that the link is back within
//! seconds of the path, and all redials come due at once when a relay
//! reservation is accepted. A relay is redialled more often than a
//! member ([`RELAY_GAP`]): a team has one or two, and members behind NATs
//! only meet again once their reservations are back.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Back-off before the first redial; it doubles each time, up to [`GAP`]
/// for a member and [`RELAY_GAP`] for a relay.
const FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two redials of a member.
pub(crate) const GAP: Duration = Duration::from_secs(2);
/// The longest wait between two redials of a relay.
pub(crate) const RELAY_GAP: Duration = Duration::from_secs(1);
/// How long after the loss redials go on; then discovery (bootstrap, DHT,
/// mDNS) is left to find the peer.
const FOR: Duration = Duration::from_secs(120);

/// The redials still due to a peer whose connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconnect {
    peer: PeerId,
    /// The direct addresses this node had dialled it at, with
    /// `/p2p/<peer>`; maybe none.
    addrs: Vec<Multiaddr>,
    /// The wait before the next redial after this one.
    gap: Duration,
    /// The longest [`Self::gap`] grows to.
    max_gap: Duration,
    at: Instant,
    until: Instant,
}

impl Reconnect {
    /// Redials of `peer` at `addrs` (the direct addresses this node had
    /// dialled it at), from `now`, at most `max_gap` apart ([`GAP`] or
    /// [`RELAY_GAP`]).
    pub(crate) fn after_loss(
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        now: Instant,
        max_gap: Duration,
    ) -> Self {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(peer)),
            })
            .collect();
        Self {
            peer,
            addrs,
            gap: FIRST.min(max_gap),
            max_gap,
            at: now + FIRST,
            until: now + FOR,
        }
    }

    /// The peer and its direct addresses when a redial is due at `now`;
    /// `self` then waits twice as long for the next (at most its
    /// `max_gap`), and is over (`false`) once [`FOR`] has passed since the
    /// loss.
    pub(crate) fn due(&mut self, now: Instant) -> (Option<(PeerId, Vec<Multiaddr>)>, bool) {
        if now < self.at {
            return (None, true);
        }
        self.gap = (self.gap * 2).min(self.max_gap);
        self.at = now + self.gap;
        (Some((self.peer, self.addrs.clone())), self.at < self.until)
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
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut r = Reconnect::after_loss(peer, vec![addr.clone()], now, GAP);
        assert_eq!(r.due(now), (None, true), "not before the first back-off");
        let (dial, more) = r.due(now + FIRST);
        assert_eq!(dial, Some((peer, vec![addr.with(Protocol::P2p(peer))])));
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
        assert_eq!(gaps[..2], [FIRST * 2, GAP]);
        assert!(gaps.iter().all(|g| *g <= GAP));
        assert!(at - now <= FOR && at - now > FOR - GAP, "{:?}", at - now);
    }

    #[test]
    fn a_relay_is_redialled_every_second() {
        let peer = PeerId::random();
        let now = Instant::now();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut r = Reconnect::after_loss(peer, vec![addr], now, RELAY_GAP);
        let mut at = now + FIRST;
        let mut dials = vec![];
        while let (Some(_), true) = r.due(at) {
            dials.push(at);
            at = r.at;
        }
        let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[0], RELAY_GAP);
        assert!(gaps.iter().all(|g| *g == RELAY_GAP), "{gaps:?}");
        assert!(
            dials.len() as u32 >= FOR.as_secs() as u32 - 2,
            "{}",
            dials.len()
        );
    }

    #[test]
    fn a_hurried_redial_is_due_at_once() {
        let peer = PeerId::random();
        let now = Instant::now();
        let mut r = Reconnect::after_loss(peer, vec![], now, GAP);
        let _ = r.due(now + FIRST);
        let later = now + FIRST + Duration::from_millis(10);
        assert_eq!(r.due(later).0, None);
        r.hurry(later);
        assert!(r.due(later).0.is_some());
    }
}
