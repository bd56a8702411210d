//! The body types of the proxy's requests and responses.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{Buf as _, Bytes};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};

/// Body of the requests sent upstream: the client's body as it streams in
/// (counted when the request is observed), or a kept copy when a request
/// goes to a second provider.
pub type UpBody = Either<Counted<Incoming>, Full<Bytes>>;

/// Body type of the responses of the front door: an upstream's body as it
/// comes, or a page of the proxy.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Bytes of a body seen so far; the observed front door puts one in a
/// request's extensions to learn how many bytes the client sent.
#[derive(Debug, Default)]
pub struct Tally(AtomicU64);

impl Tally {
    /// The bytes counted.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
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
            tally.add(data.remaining());
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
