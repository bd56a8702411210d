//! The table of announcements received from other nodes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::record::Announcement;

/// How long the sequence number of a withdrawn or expired provider is kept,
/// so that replays of its old announcements are recognised.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// A received announcement with its signed encoding.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The verified announcement.
    pub announcement: Announcement,
    /// The signed envelope as received, for relaying in sync responses.
    pub envelope: Vec<u8>,
    /// When the entry expires unless refreshed.
    pub expires: Instant,
}

impl Entry {
    fn is_live(&self) -> bool {
        !self.announcement.services.is_empty()
    }
}

/// What [`Registry::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The provider's set of services changed.
    Changed,
    /// Same services, new expiry.
    Refreshed,
    /// The sequence number was not newer than the one known: ignored.
    Stale,
}

/// Announcements of remote providers, keyed by provider.
#[derive(Debug, Default)]
pub struct Registry {
    entries: HashMap<PeerId, Entry>,
}

impl Registry {
    /// Applies a verified announcement. `ttl` caps the announcement's own TTL
    /// (used for relayed entries whose remaining lifetime is known).
    pub fn insert(
        &mut self,
        announcement: Announcement,
        envelope: Vec<u8>,
        ttl: Duration,
        now: Instant,
    ) -> Outcome {
        let ttl = ttl.min(announcement.ttl());
        let expires = if announcement.services.is_empty() {
            now + TOMBSTONE_TTL
        } else {
            now + ttl
        };
        let provider = announcement.provider;
        let outcome = match self.entries.get(&provider) {
            Some(old) if old.announcement.seq >= announcement.seq => return Outcome::Stale,
            Some(old) if old.announcement.services == announcement.services => Outcome::Refreshed,
            Some(_) => Outcome::Changed,
            None if announcement.services.is_empty() => Outcome::Refreshed,
            None => Outcome::Changed,
        };
        self.entries.insert(
            provider,
            Entry {
                announcement,
                envelope,
                expires,
            },
        );
        outcome
    }

    /// Drops live entries past their expiry (keeping their sequence numbers)
    /// and old tombstones. Returns the providers whose services vanished.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let mut gone = Vec::new();
        self.entries.retain(|peer, entry| {
            if entry.expires > now {
                return true;
            }
            if entry.is_live() {
                gone.push(*peer);
                entry.announcement.services.clear();
                entry.envelope.clear();
                entry.expires = now + TOMBSTONE_TTL;
                true
            } else {
                false
            }
        });
        gone
    }

    /// Withdraws a provider's services at once (its connection closed).
    /// Returns whether it had any.
    pub fn forget(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.entries.get_mut(peer) {
            Some(entry) if entry.is_live() => {
                entry.announcement.services.clear();
                entry.envelope.clear();
                entry.expires = now + TOMBSTONE_TTL;
                true
            }
            _ => false,
        }
    }

    /// Forgets everything, tombstones included (on a change of namespace).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Every entry with services.
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.is_live())
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::record::{FORMAT_VERSION, ServiceRecord};

    fn ann(peer: PeerId, seq: u64, services: &[&str]) -> Announcement {
        Announcement {
            v: FORMAT_VERSION,
            namespace: "ns".into(),
            provider: peer,
            seq,
            ttl_secs: 10,
            services: services
                .iter()
                .map(|s| ServiceRecord::http(*s, semver::Version::new(1, 0, 0)))
                .collect(),
        }
    }

    #[test]
    fn sequence_numbers_order_updates() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut r = Registry::default();
        assert_eq!(
            r.insert(ann(peer, 5, &["api"]), vec![], ttl, now),
            Outcome::Changed
        );
        assert_eq!(
            r.insert(ann(peer, 5, &["api"]), vec![], ttl, now),
            Outcome::Stale
        );
        assert_eq!(
            r.insert(ann(peer, 4, &["web"]), vec![], ttl, now),
            Outcome::Stale
        );
        assert_eq!(
            r.insert(ann(peer, 6, &["api"]), vec![], ttl, now),
            Outcome::Refreshed
        );
        assert_eq!(
            r.insert(ann(peer, 7, &[]), vec![], ttl, now),
            Outcome::Changed
        );
        assert_eq!(r.live().count(), 0);
        // A replay of an older announcement cannot resurrect the withdrawn service.
        assert_eq!(
            r.insert(ann(peer, 6, &["api"]), vec![], ttl, now),
            Outcome::Stale
        );
    }

    #[test]
    fn expiry_and_forget_keep_the_sequence() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let now = Instant::now();
        let mut r = Registry::default();
        r.insert(ann(peer, 1, &["api"]), vec![], Duration::from_secs(2), now);
        assert!(r.expire(now + Duration::from_secs(1)).is_empty());
        assert_eq!(r.expire(now + Duration::from_secs(3)), vec![peer]);
        assert_eq!(r.live().count(), 0);
        let later = now + Duration::from_secs(4);
        assert_eq!(
            r.insert(
                ann(peer, 1, &["api"]),
                vec![],
                Duration::from_secs(9),
                later
            ),
            Outcome::Stale
        );
        assert_eq!(
            r.insert(
                ann(peer, 2, &["api"]),
                vec![],
                Duration::from_secs(9),
                later
            ),
            Outcome::Changed
        );
        assert!(r.forget(&peer, later));
        assert!(!r.forget(&peer, later));
        assert_eq!(r.live().count(), 0);
    }
}
