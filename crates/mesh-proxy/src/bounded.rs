//! A bounded queue's sender that never waits: what does not fit is dropped,
//! counted, and logged now and then (the 1st, 2nd, 4th, 8th... drop).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tracing::warn;

/// Sends without waiting; counts what is dropped.
#[derive(Debug)]
pub(crate) struct Lossy<T> {
    tx: mpsc::Sender<T>,
    dropped: AtomicU64,
    /// What a drop loses, for the log line: `request log lines`.
    what: &'static str,
}

impl<T> Lossy<T> {
    pub(crate) fn new(tx: mpsc::Sender<T>, what: &'static str) -> Self {
        Self {
            tx,
            dropped: AtomicU64::new(0),
            what,
        }
    }

    /// Queues `item`, or drops it when the queue is full.
    pub(crate) fn send(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 || before.is_power_of_two() {
                warn!(
                    dropped = before + 1,
                    what = self.what,
                    "falling behind; dropping"
                );
            }
        }
    }

    /// Items dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_does_not_fit_is_dropped_and_counted() {
        let (tx, mut rx) = mpsc::channel(2);
        let lossy = Lossy::new(tx, "things");
        for i in 0..5 {
            lossy.send(i);
        }
        assert_eq!(lossy.dropped(), 3);
        assert_eq!((rx.recv().await, rx.recv().await), (Some(0), Some(1)));
    }
}
