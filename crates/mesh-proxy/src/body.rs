//! The body types of the proxy's requests and responses.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Body of the requests sent upstream: the client's body as it streams in
/// (counted when the request is observed), or a kept copy when a request
/// goes to a second provider.
pub type UpBody = Either<Counted<Incoming>, Full<Bytes>>;

/// Body type of the responses of the front door: an upstream's body as it
/// comes, or a page of the proxy.
pub type Body = Either<Incoming, Full<Bytes>>;

use crate::inspect::{BodyPrefix, Prefix};

/// Bytes of a body seen so far, and its first bytes when the inspector
/// keeps them; the observed front door puts one in a request's extensions
/// to learn how many bytes the client sent.
#[derive(Debug, Default)]
pub struct Tally {
    bytes: AtomicU64,
    /// The kept start of the body, while it is not full.
    prefix: Option<Mutex<Prefix>>,
    full: AtomicBool,
}

impl Tally {
    /// A tally that also keeps the first `limit` bytes.
    pub fn teeing(limit: usize) -> Self {
        Self {
            prefix: Some(Mutex::new(Prefix::new(limit))),
            ..Self::default()
        }
    }

    /// The bytes counted.
    pub fn get(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The kept start of the body (once; empty afterwards).
    pub fn take_prefix(&self) -> Option<BodyPrefix> {
        let prefix = self.prefix.as_ref()?;
        let mut kept = prefix.lock().unwrap_or_else(|e| e.into_inner());
        let mut prefix = std::mem::replace(&mut *kept, Prefix::new(0)).finish();
        // Bytes beyond a full prefix were only counted.
        prefix.total = prefix.total.max(self.get());
        prefix.truncated |= prefix.total > prefix.bytes.len() as u64;
        Some(prefix)
    }

    fn add(&self, data: &[u8]) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(prefix) = &self.prefix
            && !self.full.load(Ordering::Relaxed)
        {
            let mut kept = prefix.lock().unwrap_or_else(|e| e.into_inner());
            kept.see(data);
            if kept.is_full() {
                self.full.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A request body that counts the bytes that pass into a [`Tally`], and
/// ends with [`BodyError::Stalled`] when the client sends nothing for
/// `stall` while it is being read (time the reader spends elsewhere, such
/// as waiting for a slow upstream, does not count).
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    tally: Option<Arc<Tally>>,
    stall: Duration,
    /// Made on the first wait; armed while the reader waits for the client.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> Counted<B> {
    pub fn new(inner: B, tally: Option<Arc<Tally>>, stall: Duration) -> Self {
        Self {
            inner,
            tally,
            stall,
            timer: None,
            armed: false,
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading the client's bytes failed.
    #[error(transparent)]
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// The client sent no part of the body for this long.
    #[error("the client sent nothing of the request body for {} s", .0.as_secs())]
    Stalled(Duration),
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) else {
            let deadline = Instant::now() + this.stall;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if !std::mem::replace(&mut this.armed, true) {
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            return Poll::Ready(Some(Err(BodyError::Stalled(this.stall))));
        };
        this.armed = false;
        if let (Some(tally), Some(Ok(frame))) = (&this.tally, &frame)
            && let Some(data) = frame.data_ref()
        {
            tally.add(data);
        }
        Poll::Ready(frame.map(|r| r.map_err(|e| BodyError::Read(e.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn a_teeing_tally_keeps_the_start_and_counts_everything() {
        let chunks = (0..10u8)
            .map(|i| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![i; 1000]))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let tally = Arc::new(Tally::teeing(2500));
        let passed = Counted::new(body, Some(tally.clone()), Duration::from_secs(30))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(passed.len(), 10_000, "the body passes whole");
        assert_eq!(tally.get(), 10_000);
        let kept = tally.take_prefix().unwrap();
        assert_eq!(kept.bytes.len(), 2500);
        assert_eq!(
            (&kept.bytes[..1000], kept.bytes[2499]),
            (&[0u8; 1000][..], 2)
        );
        assert!(kept.truncated);
        assert_eq!(kept.total, 10_000);
        assert!(
            Tally::default().take_prefix().is_none(),
            "a plain tally keeps nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_the_client_stops_sending_ends_with_an_error() {
        use futures::StreamExt as _;
        let start = Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"start")));
        let frames = futures::stream::iter([start]).chain(futures::stream::pending());
        let stall = Duration::from_secs(30);
        let mut counted = Counted::new(http_body_util::StreamBody::new(frames), None, stall);
        let first = counted.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "start");
        // Time the reader spends away does not count.
        tokio::time::sleep(stall * 2).await;
        let waited = Instant::now();
        let next = counted.frame().await.unwrap();
        assert!(
            matches!(next, Err(BodyError::Stalled(s)) if s == stall),
            "{next:?}"
        );
        assert_eq!(waited.elapsed(), stall);
    }
}
