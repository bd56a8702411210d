//! Reading one request-response message from bytes, as the node's codec
//! reads it from a stream: what the fuzz targets of the admission and sync
//! decoders call.

use std::io;

use libp2p::{StreamProtocol, request_response::Codec};

/// The request `codec` reads from a stream holding `bytes`.
pub(crate) fn request<C: Codec<Protocol = StreamProtocol>>(
    mut codec: C,
    protocol: &StreamProtocol,
    bytes: &[u8],
) -> io::Result<C::Request> {
    let mut stream = bytes;
    futures::executor::block_on(codec.read_request(protocol, &mut stream))
}

/// The response `codec` reads from a stream holding `bytes`.
pub(crate) fn response<C: Codec<Protocol = StreamProtocol>>(
    mut codec: C,
    protocol: &StreamProtocol,
    bytes: &[u8],
) -> io::Result<C::Response> {
    let mut stream = bytes;
    futures::executor::block_on(codec.read_response(protocol, &mut stream))
}
