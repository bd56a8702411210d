//! Counts of what the node's event loop did that no [`crate::Snapshot`]
//! shows: hole-punch outcomes and record gossip. Plain atomics, bumped by
//! the event loop and read by whoever exports metrics (the proxy's
//! Prometheus collector), so mesh-core needs no metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of one node; shared by the event loop and its handles.
#[derive(Debug, Default)]
pub struct Counters {
    hole_punch_succeeded: AtomicU64,
    hole_punch_failed: AtomicU64,
    gossip_published: AtomicU64,
    gossip_accepted: AtomicU64,
    gossip_rejected: AtomicU64,
    sync_entries_accepted: AtomicU64,
    sync_entries_rejected: AtomicU64,
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountersSnapshot {
    /// DCUtR hole punches that gave a direct connection.
    pub hole_punch_succeeded: u64,
    /// DCUtR hole punches that failed (the relayed path stays).
    pub hole_punch_failed: u64,
    /// Announcements this node published on its namespace's topic.
    pub gossip_published: u64,
    /// Gossiped announcements of other members accepted (new, refreshed or
    /// stale but valid).
    pub gossip_accepted: u64,
    /// Gossiped messages rejected as malformed or invalid.
    pub gossip_rejected: u64,
    /// Announcements received in sync answers and accepted.
    pub sync_entries_accepted: u64,
    /// Announcements received in sync answers and rejected.
    pub sync_entries_rejected: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn hole_punch(&self, succeeded: bool) {
        bump(if succeeded {
            &self.hole_punch_succeeded
        } else {
            &self.hole_punch_failed
        });
    }

    pub(crate) fn published(&self) {
        bump(&self.gossip_published);
    }

    pub(crate) fn gossip(&self, accepted: bool) {
        bump(if accepted {
            &self.gossip_accepted
        } else {
            &self.gossip_rejected
        });
    }

    pub(crate) fn sync_entry(&self, accepted: bool) {
        bump(if accepted {
            &self.sync_entries_accepted
        } else {
            &self.sync_entries_rejected
        });
    }

    /// The values now.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            hole_punch_succeeded: get(&self.hole_punch_succeeded),
            hole_punch_failed: get(&self.hole_punch_failed),
            gossip_published: get(&self.gossip_published),
            gossip_accepted: get(&self.gossip_accepted),
            gossip_rejected: get(&self.gossip_rejected),
            sync_entries_accepted: get(&self.sync_entries_accepted),
            sync_entries_rejected: get(&self.sync_entries_rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_bumps_its_own_counter() {
        let c = Counters::default();
        c.hole_punch(true);
        c.hole_punch(false);
        c.hole_punch(false);
        c.published();
        c.gossip(true);
        c.gossip(false);
        c.sync_entry(true);
        c.sync_entry(true);
        c.sync_entry(false);
        let s = c.snapshot();
        assert_eq!((s.hole_punch_succeeded, s.hole_punch_failed), (1, 2));
        assert_eq!(s.gossip_published, 1);
        assert_eq!((s.gossip_accepted, s.gossip_rejected), (1, 1));
        assert_eq!((s.sync_entries_accepted, s.sync_entries_rejected), (2, 1));
    }
}
