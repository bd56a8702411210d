//! Byte counts of tunnel streams: the counters a stream holds, bumped
//! with one atomic add per read or write (by `TunnelIo` on the consumer
//! side, by the splice's `Activity` on the provider side).

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// The counters of one tunnel stream: bytes sent to and received from the
/// peer, and the open-streams gauge it is counted in until dropped.
#[derive(Debug)]
pub(crate) struct StreamCounters {
    sent: Counter,
    received: Counter,
    open: Gauge,
}

impl StreamCounters {
    pub(super) fn new(sent: Counter, received: Counter, open: Gauge) -> Self {
        open.inc();
        Self {
            sent,
            received,
            open,
        }
    }

    /// Notes `n` bytes sent to the peer.
    pub(crate) fn sent(&self, n: usize) {
        if n > 0 {
            self.sent.inc_by(n as u64);
        }
    }

    /// Notes `n` bytes received from the peer.
    pub(crate) fn received(&self, n: usize) {
        if n > 0 {
            self.received.inc_by(n as u64);
        }
    }
}

impl Drop for StreamCounters {
    fn drop(&mut self) {
        self.open.dec();
    }
}
