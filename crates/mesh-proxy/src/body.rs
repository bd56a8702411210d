//! The body types of the proxy's requests and responses.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};

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

/// A body whose data bytes are added to a [`Tally`] as they stream through.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    tally: Option<Arc<Tally>>,
}

impl<B> Counted<B> {
    /// `inner`, counted in `tally` when there is one.
    pub fn new(inner: B, tally: Option<Arc<Tally>>) -> Self {
        Self { inner, tally }
    }
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let (Some(tally), Some(Ok(frame))) = (&self.tally, &frame)
            && let Some(data) = frame.data_ref()
        {
            tally.add(data);
        }
        Poll::Ready(frame)
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
        let passed = Counted::new(body, Some(tally.clone()))
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
}
