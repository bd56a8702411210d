//! `/api/events`: server-sent events. The stream opens with the current
//! state and sends it again, whole, each time the console publishes a new
//! one (`event: state`); a comment every [`KEEPALIVE`] finds clients that
//! went away. It ends when the front door closes.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Published, SiteBody};

/// Time between keep-alive comments on a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One event carrying `json`; the first also tells the browser to
/// reconnect after a second when the stream breaks.
fn event(json: &[u8], first: bool) -> Bytes {
    let retry: &[u8] = if first { b"retry: 1000\n" } else { b"" };
    [retry, b"event: state\ndata: ", json, b"\n\n"]
        .concat()
        .into()
}

/// The event stream of `live`, ending when `closing` is cancelled or the
/// console is gone.
pub(super) fn response(
    live: watch::Receiver<Arc<Published>>,
    closing: CancellationToken,
) -> Response<SiteBody> {
    let stream = futures::stream::unfold(
        (live, closing, true),
        |(mut live, closing, first)| async move {
            if first {
                let current = live.borrow_and_update().clone();
                let frame = Frame::data(event(&current.json, true));
                return Some((Ok::<_, Infallible>(frame), (live, closing, false)));
            }
            let data = tokio::select! {
                _ = closing.cancelled() => return None,
                changed = live.changed() => {
                    changed.ok()?;
                    let current = live.borrow_and_update().clone();
                    event(&current.json, false)
                }
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            };
            Some((Ok(Frame::data(data)), (live, closing, false)))
        },
    );
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_sse_frames() {
        assert_eq!(
            &event(b"{\"a\":1}", true)[..],
            b"retry: 1000\nevent: state\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(&event(b"{}", false)[..], b"event: state\ndata: {}\n\n");
    }
}
