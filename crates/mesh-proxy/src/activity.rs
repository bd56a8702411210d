//! What a tunnel splice moves, so that a drain can tell a tunnel with a
//! response in flight from an idle keep-alive one.
//!
//! A provider splices bytes without parsing HTTP, and a consumer keeps its
//! tunnel streams open between requests (a pooled HTTP/1.1 connection, or
//! one shared HTTP/2 connection). At shutdown such a tunnel would stay
//! open until the grace period ends. [`Activity::until_idle`] ends it
//! earlier: once the backend spoke last and nothing moved for
//! [`IDLE_AFTER_RESPONSE`]. While the consumer spoke last (a request waits
//! for its response) the tunnel is never idle; a response that pauses for
//! longer than that mid-body is cut early, as it would be by the grace.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{inspect::TunnelCapture, metrics::io::StreamCounters, trace::TunnelTrace};

/// How long a tunnel whose backend spoke last must be quiet to count as
/// idle during a drain.
pub(crate) const IDLE_AFTER_RESPONSE: Duration = Duration::from_secs(1);
/// How often a draining tunnel looks at its counters.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Bytes a splice moved and which side sent the last of them.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    moved: AtomicU64,
    backend_last: AtomicBool,
    /// The tunnel's byte counts for metrics: what the consumer sent is
    /// received from the peer, what the backend sent is sent to it.
    counters: Option<StreamCounters>,
    /// The tunnel's server spans, when the node exports traces.
    trace: Option<TunnelTrace>,
    /// The tunnel's requests for the inspector, when it captures.
    capture: Option<TunnelCapture>,
}

/// One side of a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The tunnel stream: requests from the consumer.
    Consumer,
    /// The backend connection: responses.
    Backend,
}

impl Activity {
    /// An activity that also counts the bytes in `counters` and finds the
    /// requests `trace` records.
    pub(crate) fn observed(
        counters: Option<StreamCounters>,
        trace: Option<TunnelTrace>,
        capture: Option<TunnelCapture>,
    ) -> Self {
        Self {
            counters,
            trace,
            capture,
            ..Self::default()
        }
    }

    /// Notes `bytes` read from `side`, which the tracer may rewrite.
    fn seen(&self, side: Side, bytes: &mut [u8]) {
        self.read(side, bytes.len());
        match (&self.trace, side) {
            (Some(t), Side::Consumer) => t.consumer(bytes),
            (Some(t), Side::Backend) => t.backend(bytes),
            (None, _) => {}
        }
        // After the tracer: the capture sees what the backend receives.
        match (&self.capture, side) {
            (Some(c), Side::Consumer) => c.consumer(bytes),
            (Some(c), Side::Backend) => c.backend(bytes),
            (None, _) => {}
        }
    }

    /// The splice ended: a traced or captured response still open ends now.
    pub(crate) fn closed(&self) {
        if let Some(t) = &self.trace {
            t.close();
        }
        if let Some(c) = &self.capture {
            c.close();
        }
    }

    /// Notes `n` bytes read from `side`.
    fn read(&self, side: Side, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        self.backend_last
            .store(side == Side::Backend, Ordering::Relaxed);
        match (&self.counters, side) {
            (Some(c), Side::Consumer) => c.received(n),
            (Some(c), Side::Backend) => c.sent(n),
            (None, _) => {}
        }
    }

    /// Returns once the backend spoke last and nothing moved for
    /// [`IDLE_AFTER_RESPONSE`].
    pub(crate) async fn until_idle(&self) {
        let mut quiet = Quiet::default();
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let moved = self.moved.load(Ordering::Relaxed);
            let backend_last = self.backend_last.load(Ordering::Relaxed);
            if quiet.observe(moved, backend_last, CHECK_EVERY) >= IDLE_AFTER_RESPONSE {
                return;
            }
        }
    }

    /// `io` as one side of the splice, counting what is read from it.
    pub(crate) fn count<'a, T>(&'a self, side: Side, io: &'a mut T) -> Counted<'a, T> {
        Counted {
            io,
            side,
            activity: self,
        }
    }
}

/// How long a tunnel has been quiet after a response: the pure part of
/// [`Activity::until_idle`].
#[derive(Debug, Default)]
struct Quiet {
    last_moved: Option<u64>,
    quiet: Duration,
}

impl Quiet {
    /// Takes one look at the counters, `step` after the previous one, and
    /// says how long the tunnel has been quiet with the backend last.
    fn observe(&mut self, moved: u64, backend_last: bool, step: Duration) -> Duration {
        if self.last_moved == Some(moved) && backend_last {
            self.quiet += step;
        } else {
            self.quiet = Duration::ZERO;
        }
        self.last_moved = Some(moved);
        self.quiet
    }
}

/// An IO of a splice that counts its reads into an [`Activity`].
pub(crate) struct Counted<'a, T> {
    io: &'a mut T,
    side: Side,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let (activity, side) = (self.activity, self.side);
            activity.seen(side, &mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(100);

    #[test]
    fn quiet_counts_only_after_the_backend_spoke_last() {
        let mut q = Quiet::default();
        // First look: nothing to compare with yet.
        assert_eq!(q.observe(10, true, STEP), Duration::ZERO);
        assert_eq!(q.observe(10, true, STEP), STEP);
        assert_eq!(q.observe(10, true, STEP), 2 * STEP);
        // Bytes moved: quiet starts over.
        assert_eq!(q.observe(20, true, STEP), Duration::ZERO);
        assert_eq!(q.observe(20, true, STEP), STEP);
        // The consumer spoke last (a request waits for its response): never idle.
        let mut waiting = Quiet::default();
        for _ in 0..50 {
            assert_eq!(waiting.observe(7, false, STEP), Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn reads_are_counted_by_side() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let activity = Activity::default();
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"request").await.unwrap();
        let mut buf = [0u8; 16];
        let n = activity
            .count(Side::Consumer, &mut a)
            .read(&mut buf)
            .await
            .unwrap();
        assert_eq!(n, 7);
        assert!(!activity.backend_last.load(Ordering::Relaxed));
        b.write_all(b"response").await.unwrap();
        let n = activity
            .count(Side::Backend, &mut a)
            .read(&mut buf)
            .await
            .unwrap();
        assert_eq!(n, 8);
        assert_eq!(activity.moved.load(Ordering::Relaxed), 15);
        assert!(activity.backend_last.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn until_idle_returns_a_second_after_the_response() {
        let activity = Activity::default();
        activity.read(Side::Consumer, 100);
        activity.read(Side::Backend, 200);
        let started = std::time::Instant::now();
        activity.until_idle().await;
        let took = started.elapsed();
        assert!(
            took >= IDLE_AFTER_RESPONSE && took < 5 * IDLE_AFTER_RESPONSE,
            "{took:?}"
        );
    }
}
