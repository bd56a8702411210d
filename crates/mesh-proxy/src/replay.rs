//! Body replay: the copy of a request kept so that it can be sent to a
//! second provider when the first fails before answering.
//!
//! The one bounded exception to streaming bodies: a request body of at most
//! [`MAX_REPLAY_BODY`] bytes, with a known length, is read before the first
//! attempt. A larger or unknown-length body streams, and its request is sent
//! once.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{Either, Full};
use hyper::body::SizeHint;

use crate::body::UpBody;

/// Largest request body kept so that the request can be sent again to
/// another provider when the first fails.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Whether a copy of a request is worth keeping: its method may be sent
/// again and there is another provider to send it to.
pub(crate) fn wanted(retry_allowed: bool, candidates: usize) -> bool {
    retry_allowed && candidates > 1
}

/// Whether a body of `size` is small enough to be read and kept.
fn small_enough(size: &SizeHint) -> bool {
    size.exact().is_some_and(|n| n <= MAX_REPLAY_BODY)
}

/// What a request needs to be sent again.
pub(crate) struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps a copy of `request`, reading its body when it is at most
    /// [`MAX_REPLAY_BODY`] bytes (the request then carries the copy). A
    /// request with a larger or unknown-length body cannot be sent twice:
    /// `None`.
    pub(crate) async fn keep(
        request: &mut Request<UpBody>,
    ) -> Result<Option<Self>, crate::body::BodyError> {
        use http_body_util::BodyExt as _;
        use hyper::body::Body as _;
        let body = match request.body() {
            Either::Left(incoming) if incoming.is_end_stream() => Bytes::new(),
            Either::Left(incoming) => {
                if !small_enough(&incoming.size_hint()) {
                    return Ok(None);
                }
                let body = std::mem::replace(request.body_mut(), Either::Right(Full::default()));
                let Either::Left(incoming) = body else {
                    unreachable!("checked above")
                };
                let bytes = incoming.collect().await?.to_bytes();
                *request.body_mut() = Either::Right(Full::new(bytes.clone()));
                bytes
            }
            Either::Right(_) => return Ok(None),
        };
        Ok(Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body,
        }))
    }

    /// A new copy of the kept request.
    pub(crate) fn request(&self) -> Request<UpBody> {
        let mut r = Request::new(Either::Right(Full::new(self.body.clone())));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_known_small_bodies_of_retryable_requests() {
        assert!(wanted(true, 2));
        assert!(!wanted(true, 1), "nobody to send it to");
        assert!(!wanted(false, 3), "the retry policy says no");
        assert!(small_enough(&SizeHint::with_exact(0)));
        assert!(small_enough(&SizeHint::with_exact(MAX_REPLAY_BODY)));
        assert!(!small_enough(&SizeHint::with_exact(MAX_REPLAY_BODY + 1)));
        assert!(!small_enough(&SizeHint::new()), "chunked: unknown length");
    }

    #[tokio::test]
    async fn a_kept_request_is_copied_whole() {
        let mut request = Request::post("/x")
            .header("x-a", "1")
            .body(Either::Right(Full::new(Bytes::from_static(b"body"))))
            .unwrap();
        // A body the proxy made itself is not the client's: nothing to keep.
        assert!(Replay::keep(&mut request).await.unwrap().is_none());
        let replay = Replay {
            method: http::Method::PUT,
            uri: Uri::from_static("/y?q"),
            headers: request.headers().clone(),
            body: Bytes::from_static(b"kept"),
        };
        let again = replay.request();
        assert_eq!(again.method(), http::Method::PUT);
        assert_eq!(again.uri(), "/y?q");
        assert_eq!(again.headers()["x-a"], "1");
        let Either::Right(body) = again.into_body() else {
            unreachable!()
        };
        use http_body_util::BodyExt as _;
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "kept");
    }
}
