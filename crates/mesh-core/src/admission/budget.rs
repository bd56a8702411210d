//! How many challenges this node answers per peer: a member sends one per
//! connection (and a few again when one is lost), so a peer that sends them
//! in a loop gets a few answers, then silence, and is logged once per burst.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Answers a peer gets at once.
const BURST: u32 = 12;
/// One more answer per this long.
const REFILL: Duration = Duration::from_secs(5);
/// Peers remembered at most; beyond, those whose budget is whole again are
/// forgotten (they would get a whole budget anyway).
const MAX_PEERS: usize = 4096;

/// What [`AnswerBudget::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer.
    Answer,
    /// Do not answer; the first refusal of a burst (log it).
    FirstRefusal,
    /// Do not answer; already logged.
    Refuse,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    /// When the last token was counted in.
    since: Instant,
    logged: bool,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.since).as_millis() / REFILL.as_millis();
        if earned > 0 {
            self.tokens = BURST.min(self.tokens.saturating_add(earned as u32));
            self.since += REFILL * earned as u32;
        }
        if self.tokens == BURST {
            self.since = now;
        }
    }
}

/// A token bucket per peer.
#[derive(Debug)]
pub(crate) struct AnswerBudget<P> {
    buckets: HashMap<P, Bucket>,
}

impl<P> Default for AnswerBudget<P> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
        }
    }
}

impl<P: Hash + Eq + Copy> AnswerBudget<P> {
    /// Whether to answer `peer`'s challenge now.
    pub(crate) fn take(&mut self, peer: P, now: Instant) -> Verdict {
        if self.buckets.len() >= MAX_PEERS && !self.buckets.contains_key(&peer) {
            self.buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST
            });
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: BURST,
            since: now,
            logged: false,
        });
        bucket.refill(now);
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            bucket.logged = false;
            Verdict::Answer
        } else if bucket.logged {
            Verdict::Refuse
        } else {
            bucket.logged = true;
            Verdict::FirstRefusal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_answered_then_one_per_refill() {
        let mut budget = AnswerBudget::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(budget.take(1, t0), Verdict::Answer);
        }
        assert_eq!(budget.take(1, t0), Verdict::FirstRefusal);
        assert_eq!(budget.take(1, t0), Verdict::Refuse);
        // Other peers have their own budget.
        assert_eq!(budget.take(2, t0), Verdict::Answer);
        let later = t0 + REFILL + Duration::from_millis(1);
        assert_eq!(budget.take(1, later), Verdict::Answer);
        assert_eq!(budget.take(1, later), Verdict::FirstRefusal);
        // A long pause restores the whole burst, not more.
        let much_later = later + REFILL * 100;
        for _ in 0..BURST {
            assert_eq!(budget.take(1, much_later), Verdict::Answer);
        }
        assert_eq!(budget.take(1, much_later), Verdict::FirstRefusal);
    }

    #[test]
    fn the_peers_remembered_are_bounded() {
        let mut budget = AnswerBudget::default();
        let t0 = Instant::now();
        for peer in 0..MAX_PEERS as u32 {
            budget.take(peer, t0);
        }
        let later = t0 + REFILL * 2;
        budget.take(u32::MAX, later);
        assert_eq!(budget.buckets.len(), 1);
    }
}
