//! Signed envelopes this node has already verified, so that the same
//! envelope arriving again costs a hash instead of a signature check.
//!
//! Every sync answer carries the whole table of the member that sends it:
//! in a team of N nodes, each node that meets the others receives about
//! N² envelopes, nearly all of them ones it already holds. Checking an
//! ed25519 signature is most of what accepting one costs, so a node
//! joining a team of 200 would check 40,000 signatures to learn nothing.
//! An envelope seen before carries a sequence number the registry already
//! has (live or as a tombstone), so the registry would call it stale
//! anyway; the cache answers that without the check.
//!
//! Keys are 64-bit SipHash digests under keys drawn at random per process,
//! so a sender cannot make one envelope pass for another. A collision by
//! chance (about 1 in 2⁶⁴ per pair) would only make a record wait for its
//! provider's next announcement.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher as _, RandomState},
};

use libp2p::PeerId;

/// Digests remembered: a few times the largest team's table, so that the
/// envelopes of a sync round stay in it.
pub(crate) const CAPACITY: usize = 8192;

/// Envelopes already verified, with the provider each one names.
#[derive(Debug)]
pub(crate) struct Verified {
    hasher: RandomState,
    providers: HashMap<u64, PeerId>,
    /// Insertion order, for dropping the oldest once full.
    order: VecDeque<u64>,
}

impl Default for Verified {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            providers: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl Verified {
    /// The digest of `envelope`, to look up or remember it by.
    pub(crate) fn digest(&self, envelope: &[u8]) -> u64 {
        self.hasher.hash_one(envelope)
    }

    /// The provider of an envelope verified before, by its digest.
    pub(crate) fn provider(&self, digest: u64) -> Option<PeerId> {
        self.providers.get(&digest).copied()
    }

    /// Remembers a verified envelope of `provider`, forgetting the oldest
    /// past [`CAPACITY`].
    pub(crate) fn insert(&mut self, digest: u64, provider: PeerId) {
        if self.providers.insert(digest, provider).is_some() {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.providers.remove(&old);
            }
        }
    }

    /// Forgets everything (on a change of namespace, whose table starts
    /// empty).
    pub(crate) fn clear(&mut self) {
        self.providers.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_envelopes_and_forgets_the_oldest() {
        let mut v = Verified::default();
        let peer = PeerId::random();
        let first = v.digest(b"envelope 0");
        assert_eq!(v.provider(first), None);
        v.insert(first, peer);
        assert_eq!(v.provider(v.digest(b"envelope 0")), Some(peer));
        assert_eq!(v.provider(v.digest(b"envelope 1")), None);
        // Inserting the same one again does not count twice.
        v.insert(first, peer);
        for i in 1..CAPACITY {
            v.insert(v.digest(format!("envelope {i}").as_bytes()), peer);
        }
        assert_eq!(v.provider(first), Some(peer));
        v.insert(v.digest(b"one more"), peer);
        assert_eq!(v.provider(first), None, "the oldest goes first");
        assert_eq!(v.providers.len(), CAPACITY);
        v.clear();
        assert_eq!(v.provider(v.digest(b"one more")), None);
    }
}
