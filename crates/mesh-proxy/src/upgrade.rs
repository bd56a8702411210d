//! Upgrade splicing: when a backend switches protocols (WebSocket), the
//! client's upgraded connection and the backend's are spliced together.

use http::{Response, StatusCode};
use http_body_util::Either;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::{body::Body, drain::Tasks, forward};

/// Prepares a backend response for the client: hop-by-hop headers go,
/// except on a protocol switch, whose two upgraded ends are spliced in a
/// task of `tasks`.
pub(crate) fn finish_response(
    mut resp: Response<Incoming>,
    downstream: Option<OnUpgrade>,
    tasks: &Tasks,
) -> Response<Body> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = downstream {
            let upstream = hyper::upgrade::on(&mut resp);
            tasks.spawn(splice(downstream, upstream));
        }
        return resp.map(Either::Left);
    }
    forward::strip_hop_by_hop(resp.headers_mut(), None);
    // The client's connection has its own HTTP version; hyper picks it.
    *resp.version_mut() = http::Version::HTTP_11;
    resp.map(Either::Left)
}

/// Copies bytes both ways between the two upgraded connections, once both
/// have switched.
async fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(downstream, upstream) {
        Ok((down, up)) => {
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => debug!(error = %e, "upgrade failed"),
    }
}
