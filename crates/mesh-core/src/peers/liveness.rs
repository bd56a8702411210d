//! Finding connections that went silent. A peer whose network went away
//! (a partition, a laptop lid shut, a NAT that dropped its mapping) sends
//! no reset, and TCP keeps such a connection for many minutes; so while it
//! lasts the peer's records stay and nothing dials it again. Every
//! connection is pinged (`PING_EVERY`); one that has answered no ping for
//! [`SILENT_AFTER`] is closed, which withdraws the peer's services and
//! starts the redials that find it again once the path is back.
//!
//! libp2p's ping reports a failure only after two in a row and gives up
//! on the stream in between, so its events alone notice a silent peer
//! late; the time since the last answer is what is watched here.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How long a connection may go without answering a ping: two and a half
/// pings at `PING_EVERY` (10 s), so that one ping slowed by a bulk
/// transfer on a loaded machine does not make it look dead. Pinging more
/// often would find a silent peer sooner, at a cost every idle node pays
/// on every connection.
pub(crate) const SILENT_AFTER: Duration = Duration::from_secs(25);

/// When each connection last showed its peer is there.
#[derive(Debug)]
pub(crate) struct Liveness<C> {
    /// The peer and the last sign of life of each watched connection.
    last: HashMap<C, (PeerId, Instant)>,
}

impl<C> Default for Liveness<C> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> Liveness<C> {
    /// A connection to `peer` opened at `now`.
    pub(crate) fn opened(&mut self, peer: PeerId, id: C, now: Instant) {
        self.last.insert(id, (peer, now));
    }

    /// The connection answered a ping.
    pub(crate) fn answered(&mut self, id: C, now: Instant) {
        if let Some((_, at)) = self.last.get_mut(&id) {
            *at = now;
        }
    }

    /// The connection is no longer watched: it closed, or its peer does not
    /// speak ping.
    pub(crate) fn forget(&mut self, id: C) {
        self.last.remove(&id);
    }

    /// The connections silent for [`SILENT_AFTER`] at `now`; each is
    /// reported once.
    pub(crate) fn take_silent(&mut self, now: Instant) -> Vec<(PeerId, C)> {
        let silent: Vec<(PeerId, C)> = self
            .last
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= SILENT_AFTER)
            .map(|(id, (peer, _))| (*peer, *id))
            .collect();
        for (_, id) in &silent {
            self.last.remove(id);
        }
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_silent_only_without_answers_for_long_enough() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.opened(peer, 1, t0);
        l.opened(other, 2, t0);
        l.opened(other, 3, t0);
        l.forget(3);
        assert!(l.take_silent(t0 + SILENT_AFTER / 2).is_empty());
        l.answered(1, t0 + SILENT_AFTER / 2);
        assert_eq!(l.take_silent(t0 + SILENT_AFTER), vec![(other, 2)]);
        assert!(l.take_silent(t0 + SILENT_AFTER).is_empty(), "reported once");
        assert_eq!(l.take_silent(t0 + SILENT_AFTER * 2), vec![(peer, 1)]);
        // Answers of a connection not watched change nothing.
        l.answered(7, t0);
        assert!(l.take_silent(t0 + SILENT_AFTER * 9).is_empty());
    }
}
