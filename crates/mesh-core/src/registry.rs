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

/// Providers the table holds at most, live or remembered: far above a
/// team's size, so that a member that signs records with made-up identities
/// cannot grow it without bound.
pub const MAX_PROVIDERS: usize = 1024;

/// Services of all remote providers together the table holds at most (a
/// team of 200 nodes with 80 services each fits).
pub const MAX_REMOTE_SERVICES: usize = 16 * 1024;

/// Bytes of signed records of all remote providers together the table
/// holds at most, so that records padded to the size limit cannot make
/// [`MAX_PROVIDERS`] of them large.
pub const MAX_REMOTE_BYTES: usize = 32 << 20;

/// Why [`Registry::insert`] refused an announcement: the table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Full {
    /// [`MAX_PROVIDERS`] providers are known and none is a tombstone.
    #[error("the record table already holds {MAX_PROVIDERS} providers")]
    Providers,
    /// The announcement would take the services past [`MAX_REMOTE_SERVICES`].
    #[error("the record table would hold more than {MAX_REMOTE_SERVICES} services")]
    Services,
    /// The announcement would take the records past [`MAX_REMOTE_BYTES`].
    #[error("the record table would hold more than {} MiB of records", MAX_REMOTE_BYTES >> 20)]
    Bytes,
}

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
    /// Services of the live entries, kept with every change.
    services: usize,
    /// Bytes of the envelopes held, kept with every change.
    bytes: usize,
}

impl Registry {
    /// Applies a verified announcement. `ttl` caps the announcement's own TTL
    /// (used for relayed entries whose remaining lifetime is known). A new
    /// provider when [`MAX_PROVIDERS`] are known takes the place of the
    /// tombstone that would expire first, or is refused when there is none;
    /// an announcement that would take the table past
    /// [`MAX_REMOTE_SERVICES`] is refused.
    pub fn insert(
        &mut self,
        announcement: Announcement,
        envelope: Vec<u8>,
        ttl: Duration,
        now: Instant,
    ) -> Result<Outcome, Full> {
        let ttl = ttl.min(announcement.ttl());
        let expires = if announcement.services.is_empty() {
            now + TOMBSTONE_TTL
        } else {
            now + ttl
        };
        let provider = announcement.provider;
        let old = self.entries.get(&provider);
        let outcome = match old {
            Some(old) if old.announcement.seq >= announcement.seq => return Ok(Outcome::Stale),
            Some(old) if old.announcement.services == announcement.services => Outcome::Refreshed,
            Some(_) => Outcome::Changed,
            None if announcement.services.is_empty() => Outcome::Refreshed,
            None => Outcome::Changed,
        };
        let (services, bytes) = old.map_or((0, 0), |e| {
            (e.announcement.services.len(), e.envelope.len())
        });
        let services = self.services - services + announcement.services.len();
        let bytes = self.bytes - bytes + envelope.len();
        if services > MAX_REMOTE_SERVICES {
            return Err(Full::Services);
        }
        if bytes > MAX_REMOTE_BYTES {
            return Err(Full::Bytes);
        }
        if old.is_none() && self.entries.len() >= MAX_PROVIDERS {
            self.evict_a_tombstone()?;
        }
        self.services = services;
        self.bytes = bytes;
        self.entries.insert(
            provider,
            Entry {
                announcement,
                envelope,
                expires,
            },
        );
        Ok(outcome)
    }

    /// Makes room by dropping the tombstone that would expire first.
    fn evict_a_tombstone(&mut self) -> Result<(), Full> {
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_live())
            .min_by_key(|(_, e)| e.expires)
            .map(|(peer, _)| *peer)
            .ok_or(Full::Providers)?;
        if let Some(tombstone) = self.entries.remove(&oldest) {
            self.bytes -= tombstone.envelope.len();
        }
        Ok(())
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
                self.services -= entry.announcement.services.len();
                self.bytes -= entry.envelope.len();
                entry.announcement.services.clear();
                entry.envelope.clear();
                entry.expires = now + TOMBSTONE_TTL;
                true
            } else {
                self.bytes -= entry.envelope.len();
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
                self.services -= entry.announcement.services.len();
                self.bytes -= entry.envelope.len();
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
        self.services = 0;
        self.bytes = 0;
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
            Ok(Outcome::Changed)
        );
        assert_eq!(
            r.insert(ann(peer, 5, &["api"]), vec![], ttl, now),
            Ok(Outcome::Stale)
        );
        assert_eq!(
            r.insert(ann(peer, 4, &["web"]), vec![], ttl, now),
            Ok(Outcome::Stale)
        );
        assert_eq!(
            r.insert(ann(peer, 6, &["api"]), vec![], ttl, now),
            Ok(Outcome::Refreshed)
        );
        assert_eq!(
            r.insert(ann(peer, 7, &[]), vec![], ttl, now),
            Ok(Outcome::Changed)
        );
        assert_eq!(r.live().count(), 0);
        // A replay of an older announcement cannot resurrect the withdrawn service.
        assert_eq!(
            r.insert(ann(peer, 6, &["api"]), vec![], ttl, now),
            Ok(Outcome::Stale)
        );
    }

    #[test]
    fn expiry_and_forget_keep_the_sequence() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let now = Instant::now();
        let mut r = Registry::default();
        let _ = r.insert(ann(peer, 1, &["api"]), vec![], Duration::from_secs(2), now);
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
            Ok(Outcome::Stale)
        );
        assert_eq!(
            r.insert(
                ann(peer, 2, &["api"]),
                vec![],
                Duration::from_secs(9),
                later
            ),
            Ok(Outcome::Changed)
        );
        assert!(r.forget(&peer, later));
        assert!(!r.forget(&peer, later));
        assert_eq!(r.live().count(), 0);
    }

    #[test]
    fn the_table_is_bounded_in_providers_and_services() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut r = Registry::default();
        let fresh = || Keypair::generate_ed25519().public().to_peer_id();
        // A withdrawn provider is remembered as a tombstone.
        let gone = fresh();
        r.insert(ann(gone, 1, &["old"]), vec![], ttl, now).unwrap();
        r.insert(ann(gone, 2, &[]), vec![], ttl, now).unwrap();
        for _ in 1..MAX_PROVIDERS {
            r.insert(ann(fresh(), 1, &["api"]), vec![], ttl, now)
                .unwrap();
        }
        assert_eq!(r.entries.len(), MAX_PROVIDERS);
        // The next provider takes the tombstone's place; then none is left.
        r.insert(ann(fresh(), 1, &["api"]), vec![], ttl, now)
            .unwrap();
        assert!(!r.entries.contains_key(&gone));
        assert_eq!(
            r.insert(ann(fresh(), 1, &["api"]), vec![], ttl, now),
            Err(Full::Providers)
        );
        // Known providers still update; one going away makes room.
        let known = *r.entries.keys().next().unwrap();
        assert_eq!(
            r.insert(ann(known, 2, &["api", "web"]), vec![], ttl, now),
            Ok(Outcome::Changed)
        );
        assert!(r.forget(&known, now));
        assert_eq!(r.services, MAX_PROVIDERS - 1);
        r.insert(ann(fresh(), 1, &["api"]), vec![], ttl, now)
            .unwrap();
        assert_eq!(r.expire(now + ttl).len(), MAX_PROVIDERS);
        assert_eq!(r.services, 0);
    }

    #[test]
    fn the_services_of_all_providers_are_bounded() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut r = Registry::default();
        let names: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut providers = Vec::new();
        for _ in 0..MAX_REMOTE_SERVICES / 1000 {
            let peer = Keypair::generate_ed25519().public().to_peer_id();
            r.insert(ann(peer, 1, &names), vec![], ttl, now).unwrap();
            providers.push(peer);
        }
        let over = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(
            r.insert(ann(over, 1, &names), vec![], ttl, now),
            Err(Full::Services)
        );
        // Shrinking a provider's list frees its share.
        r.insert(ann(providers[0], 2, &["one"]), vec![], ttl, now)
            .unwrap();
        assert_eq!(
            r.insert(ann(over, 1, &names), vec![], ttl, now),
            Ok(Outcome::Changed)
        );
        assert_eq!(r.services, MAX_REMOTE_SERVICES / 1000 * 1000 + 1);
    }

    #[test]
    fn the_bytes_of_all_records_are_bounded() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut r = Registry::default();
        let big = vec![0u8; MAX_REMOTE_BYTES / 4];
        let peers: Vec<PeerId> = (0..5)
            .map(|_| Keypair::generate_ed25519().public().to_peer_id())
            .collect();
        for peer in &peers[..4] {
            r.insert(ann(*peer, 1, &["api"]), big.clone(), ttl, now)
                .unwrap();
        }
        assert_eq!(
            r.insert(ann(peers[4], 1, &["api"]), vec![0], ttl, now),
            Err(Full::Bytes)
        );
        r.forget(&peers[0], now);
        assert_eq!(r.bytes, 3 * big.len());
        r.insert(ann(peers[4], 1, &["api"]), vec![0], ttl, now)
            .unwrap();
    }
}
