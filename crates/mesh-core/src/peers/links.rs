//! How many member connections a node keeps: the full mesh of a small team,
//! and the bounded mesh of a large one.
//!
//! A node that knows at most [`Links::full_mesh_up_to`] other members (the
//! providers in its registry and the members it is connected to) connects
//! to every one of them. A closed connection then means the member is gone
//! or unreachable, so its services are withdrawn at once and it is dialled
//! again.
//!
//! In a larger team the cost of a connection per member (pings, gossip,
//! the tasks that poll them) would grow with the team, so:
//! - a member dials other members only while it has fewer than
//!   [`Links::wanted`] member connections, picking them at random, and
//!   accepts every connection offered;
//! - once it has more than `full_mesh_up_to`, it closes the newest ones
//!   that no tunnel uses and that are older than [`TRIM_AFTER`], those the
//!   other side dialled first: a member's own dials are what keeps it in
//!   the mesh, and the members it pushes out dial others;
//! - a tunnel to a provider it has no connection to opens one on demand
//!   (`NodeHandle::connect`), which is trimmed later like any other.
//!
//! Records still reach every member: gossipsub runs over these links, and
//! a random graph of this degree is connected. A closed link no longer
//! says that the member is gone, so its services live by their TTL and a
//! tunnel to a provider that vanished fails over when its dial fails.

use std::{
    cmp::Reverse,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// A link younger than this is never trimmed: it may have been opened for
/// a tunnel that has not started yet, and its record sync may still run.
pub(crate) const TRIM_AFTER: Duration = Duration::from_secs(30);

/// The sizes of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    /// Up to this many other members, every member connects to every
    /// other; it is also the most member connections kept in a larger team.
    pub full_mesh_up_to: usize,
    /// In a larger team, the member connections a node dials up to.
    pub wanted: usize,
}

impl Default for Links {
    fn default() -> Self {
        Self::up_to(12)
    }
}

impl Links {
    /// A full mesh up to `n` other members; beyond, `n / 3` dialled (at
    /// least 1) and `n` kept.
    pub fn up_to(n: usize) -> Self {
        Self {
            full_mesh_up_to: n,
            wanted: (n / 3).max(1),
        }
    }

    /// Whether a node that knows `known` other members keeps a bounded
    /// mesh rather than a full one.
    pub(crate) fn bounded(&self, known: usize) -> bool {
        known > self.full_mesh_up_to
    }

    /// How many more members to dial, with `links` member connections open
    /// or being dialled; `None`: every member (the full mesh).
    pub(crate) fn dials_wanted(&self, known: usize, links: usize) -> Option<usize> {
        self.bounded(known)
            .then(|| self.wanted.saturating_sub(links))
    }

    /// The member links to close, as many as there are over
    /// `full_mesh_up_to`: of those not to keep and older than
    /// [`TRIM_AFTER`], the ones the other side dialled before the ones
    /// this node did, the newest first.
    pub(crate) fn trimmed(&self, links: &[Link], now: Instant) -> Vec<PeerId> {
        let excess = links.len().saturating_sub(self.full_mesh_up_to);
        if excess == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<&Link> = links
            .iter()
            .filter(|l| !l.keep && now.saturating_duration_since(l.since) >= TRIM_AFTER)
            .collect();
        candidates.sort_by_key(|l| (l.dialled, Reverse(l.since)));
        candidates
            .into_iter()
            .take(excess)
            .map(|l| l.peer)
            .collect()
    }
}

/// A member connection, for [`Links::trimmed`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub peer: PeerId,
    /// When the peer's first connection opened.
    pub since: Instant,
    /// A tunnel uses it, or it holds a long-lived one.
    pub keep: bool,
    /// This node dialled it.
    pub dialled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_team_is_a_full_mesh() {
        let links = Links::up_to(12);
        assert_eq!(links.wanted, 4);
        assert!(!links.bounded(12));
        assert_eq!(links.dials_wanted(12, 11), None, "every member");
        assert!(links.bounded(13));
        assert_eq!(links.dials_wanted(13, 1), Some(3));
        assert_eq!(links.dials_wanted(99, 30), Some(0));
        assert_eq!(Links::up_to(2).wanted, 1);
    }

    #[test]
    fn the_newest_idle_links_over_the_bound_are_trimmed() {
        let links = Links::up_to(3);
        let start = Instant::now();
        let now = start + TRIM_AFTER + Duration::from_secs(10);
        let link = |secs: u64, keep: bool| Link {
            peer: PeerId::random(),
            since: start + Duration::from_secs(secs),
            keep,
            dialled: false,
        };
        let mut table = vec![link(0, false), link(1, false), link(2, true)];
        assert!(links.trimmed(&table, now).is_empty(), "not over the bound");
        // Over by four: two are in use, the newest is too young.
        table.push(link(3, false));
        table.push(link(4, false));
        table.push(link(5, true));
        let young = link(20, false);
        table.push(young);
        let trimmed = links.trimmed(&table, now);
        let ids: Vec<PeerId> = table.iter().map(|l| l.peer).collect();
        let peers = |i: &[usize]| i.iter().map(|&i| ids[i]).collect::<Vec<_>>();
        assert_eq!(trimmed, peers(&[4, 3, 1, 0]));
        assert!(!trimmed.contains(&young.peer));
        // This node's own dials go last.
        table[4].dialled = true;
        let trimmed = links.trimmed(&table[..6], now);
        assert_eq!(trimmed, peers(&[3, 1, 0]));
        assert_eq!(links.trimmed(&table, now), peers(&[3, 1, 0, 4]));
    }
}
