//! Raw TCP services: the `/devmesh/tcp/1` stream protocol, the provider
//! side that splices accepted streams to the local port, and the consumer
//! side's loopback listeners (one per remote TCP service).
//!
//! A stream opens like an HTTP tunnel: the consumer sends a [`Hello`]
//! frame (a big-endian `u16` length, then JSON) naming the service and the
//! version requirement the provider must satisfy; the provider answers with
//! a [`tunnel::HelloReply`]. Then each direction carries frames of raw
//! bytes ([`frames`]): a `u32` length and that many bytes, a zero length
//! meaning the sender half-closed its side. A stream that ends without that
//! zero frame (a reset stream, a lost connection, a provider that died) is
//! a reset: the other side resets its TCP connection too, so clients see
//! `ECONNRESET` instead of a clean end of data.
//!
//! Modules: `frames` (the data phase and the splice), `provider`
//! ([`crate::Proxy::serve_tcp_tunnels`]), `listeners` (which service gets
//! which loopback port, and the state `status` shows), `consumer` (the
//! listeners' tasks and each accepted connection's choice of provider).

mod consumer;
pub mod frames;
pub mod listeners;
mod provider;

use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};

use crate::{error::TunnelError, tunnel};

pub use listeners::Listeners;

/// Protocol of raw TCP tunnels.
pub const TCP_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/tcp/1");
/// Version put in hello frames.
pub const TCP_VERSION: u32 = 1;

/// First frame on a TCP stream, from the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Format version, [`TCP_VERSION`].
    pub v: u32,
    /// Namespace of the consumer.
    pub namespace: String,
    /// The service the stream is for.
    pub service: String,
    /// A semver requirement the provider's version must satisfy
    /// (`^15, >=15.2`); none: any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
}

/// Opens a TCP stream to `service` on `peer` and performs the hello
/// exchange; the stream then carries [`frames`].
pub async fn open(
    control: libp2p_stream::Control,
    peer: PeerId,
    namespace: &str,
    service: &str,
    require: Option<String>,
) -> Result<Stream, TunnelError> {
    let hello = Hello {
        v: TCP_VERSION,
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        require,
    };
    let (stream, _) = tunnel::handshake(control, peer, TCP_PROTOCOL, &hello).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_wire_format_is_stable() {
        let hello = Hello {
            v: TCP_VERSION,
            namespace: "team".into(),
            service: "db".into(),
            require: None,
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(text, r#"{"v":1,"namespace":"team","service":"db"}"#);
        let with: Hello =
            serde_json::from_str(r#"{"v":1,"namespace":"team","service":"db","require":"^15"}"#)
                .unwrap();
        assert_eq!(with.require.as_deref(), Some("^15"));
    }
}
