//! The body types of the proxy's requests and responses.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// Body of the requests sent upstream: the client's body as it streams in,
/// or a kept copy when a request goes to a second provider.
pub type UpBody = Either<Incoming, Full<Bytes>>;

/// Body type of the responses of the front door: an upstream's body as it
/// comes, or a page of the proxy.
pub type Body = Either<Incoming, Full<Bytes>>;
