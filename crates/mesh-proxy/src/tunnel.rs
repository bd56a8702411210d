//! The `/devmesh/http/1` stream protocol.
//!
//! A consumer opens a libp2p stream to the provider and sends a hello frame
//! naming the service; the provider connects to that service's local backend
//! and answers with its own frame, then splices the stream to the backend
//! connection. The consumer speaks HTTP over the stream as if it were the
//! backend connection: HTTP/1.1 (keeping idle streams like keep-alive
//! connections and sending later requests for the same service on them), or
//! HTTP/2 to a service announced with `h2`, where one stream carries one
//! HTTP/2 connection that all requests to that provider's service share.
//! Each frame is a big-endian `u16` length followed by that many bytes of
//! JSON.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::debug;

use crate::{
    error::{Chain, TunnelError},
    metrics::io::StreamCounters,
};

/// Protocol of HTTP tunnels.
pub const HTTP_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/http/1");
/// Version put in hello frames.
pub const TUNNEL_VERSION: u32 = 1;
/// Largest hello frame accepted.
pub const MAX_FRAME: usize = 4096;
/// Time allowed to open a stream and exchange hellos.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// First frame on a tunnel stream, from the consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Tunnel format version.
    pub v: u32,
    /// Namespace of the consumer.
    pub namespace: String,
    /// The service the stream is for.
    pub service: String,
    /// The consumer will speak HTTP/2 (prior knowledge) on the stream.
    #[serde(default, skip_serializing_if = "is_false")]
    pub h2: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The provider's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloReply {
    /// Whether the tunnel is accepted.
    pub ok: bool,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `Host` the backend expects, such as `localhost:3000`, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The scheme the backend serves, when not `http` (HTTP/2 requests
    /// carry it as `:scheme`; the provider does the TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<mesh_core::Scheme>,
}

/// What the provider said about an accepted tunnel.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// The `Host` the backend expects.
    pub host: Option<String>,
    /// The backend's scheme.
    pub scheme: mesh_core::Scheme,
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if bytes.len() > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let mut buf = Vec::with_capacity(bytes.len() + 2);
    buf.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    buf.extend_from_slice(&bytes);
    io.write_all(&buf).await?;
    io.flush().await
}

/// Reads one length-prefixed JSON frame of at most [`MAX_FRAME`] bytes.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    io: &mut R,
) -> std::io::Result<T> {
    let len = usize::from(io.read_u16().await?);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Size of the buffer a [`TunnelIo`] reads into.
const READ_CHUNK: usize = 32 * 1024;
/// Short pieces of a vectored write are joined up to this size: yamux's
/// largest frame, so a request head with a small body is one frame and a
/// chunked body is not cut into frames at every chunk-size line.
const JOIN_WRITES: usize = 16 * 1024;

/// A tunnel stream as hyper IO.
///
/// Reads go through a buffer zeroed once: a stream only reads into
/// initialized memory, and hyper's buffer is not, so reading into it directly
/// would zero it on every read. Writes are vectored, so that hyper hands over
/// body chunks as they are instead of copying them into its own buffer; small
/// ones are joined here.
pub struct TunnelIo {
    stream: Stream,
    chunk: Box<[u8]>,
    joined: Vec<u8>,
    /// Bytes sent and received, counted for metrics when set.
    counters: Option<StreamCounters>,
    /// Keeps the link to the provider from being trimmed while the tunnel
    /// lives, pooled or not.
    link: Option<mesh_core::holds::LinkUse>,
}

impl TunnelIo {
    fn new(stream: Stream) -> Self {
        Self {
            stream,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            joined: Vec::new(),
            counters: None,
            link: None,
        }
    }

    /// Keeps `link` in use as long as the tunnel.
    pub(crate) fn keep(&mut self, link: mesh_core::holds::LinkUse) {
        self.link = Some(link);
    }

    /// Counts what moves through the stream, from now on, in `counters`.
    pub(crate) fn count(&mut self, counters: StreamCounters) {
        self.counters = Some(counters);
    }

    fn sent(&self, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let (Some(c), Poll::Ready(Ok(n))) = (&self.counters, &polled) {
            c.sent(*n);
        }
        polled
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        use futures::AsyncRead as _;
        let this = self.get_mut();
        let want = buf.remaining().min(this.chunk.len());
        let n = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut this.chunk[..want]))?;
        buf.put_slice(&this.chunk[..n]);
        if let Some(c) = &this.counters {
            c.received(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = futures::AsyncWrite::poll_write(Pin::new(&mut this.stream), cx, buf);
        this.sent(polled)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let stream = Pin::new(&mut this.stream);
        let mut bufs = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = bufs.next() else {
            return Poll::Ready(Ok(0));
        };
        if first.len() >= JOIN_WRITES {
            let polled = futures::AsyncWrite::poll_write(stream, cx, first);
            return this.sent(polled);
        }
        // A short piece (a request head, a chunk-size line, the tail of a
        // body chunk) is topped up with what follows, so that every yamux
        // frame, and so every Noise message and send(2), is a full one.
        this.joined.clear();
        this.joined.extend_from_slice(first);
        for b in bufs {
            let room = JOIN_WRITES - this.joined.len();
            if room == 0 {
                break;
            }
            this.joined.extend_from_slice(&b[..b.len().min(room)]);
        }
        let polled = futures::AsyncWrite::poll_write(stream, cx, &this.joined);
        this.sent(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().stream), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::AsyncWrite::poll_close(Pin::new(&mut self.get_mut().stream), cx)
    }
}

/// Opens a tunnel stream to `service` on `peer` and performs the hello
/// exchange; `h2` says the consumer will speak HTTP/2 on it. Returns the
/// stream and what the provider said about its backend.
pub async fn open(
    control: libp2p_stream::Control,
    peer: PeerId,
    namespace: &str,
    service: &str,
    h2: bool,
) -> Result<(TunnelIo, Accepted), TunnelError> {
    let hello = Hello {
        v: TUNNEL_VERSION,
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        h2,
    };
    let (stream, reply) = handshake(control, peer, HTTP_PROTOCOL, &hello).await?;
    let accepted = Accepted {
        host: reply.host,
        scheme: reply.scheme.unwrap_or_default(),
    };
    Ok((TunnelIo::new(stream), accepted))
}

/// Marks the link to `peer` in use for a tunnel, connecting to it first
/// when this node has none: in a team larger than the full mesh a node
/// is connected to a few members only (mesh-core's `peers/links.rs`).
pub(crate) async fn link_to(
    node: &mesh_core::NodeHandle,
    peer: PeerId,
) -> Result<mesh_core::holds::LinkUse, TunnelError> {
    let link = node.use_link(peer);
    if !node.snapshot().peers.contains_key(&peer) {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, node.connect(peer))
            .await
            .map_err(|_| TunnelError::TimedOut {
                peer,
                after: HANDSHAKE_TIMEOUT,
            })?
            .map_err(|source| TunnelError::Connect { peer, source })?;
    }
    Ok(link)
}

/// Opens a stream of `protocol` to `peer`, sends `hello` and reads the
/// provider's [`HelloReply`], each attempt within [`HANDSHAKE_TIMEOUT`]; a
/// refusal is an error carrying the provider's reason. Failed attempts are
/// made again as [`retry_after`] says.
pub(crate) async fn handshake<H: Serialize>(
    control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    hello: &H,
) -> Result<(Stream, HelloReply), TunnelError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tried = handshake_once(control.clone(), peer, protocol.clone(), hello).await;
        if let Err(e) = &tried
            && let Some(wait) = retry_after(attempt, e)
        {
            debug!(%peer, attempt, error = %Chain(e), "opening a tunnel failed; trying again");
            tokio::time::sleep(wait).await;
            continue;
        }
        return tried;
    }
}

/// How long to wait before attempt `attempt + 1` after attempt `attempt`
/// failed with `error`; `None`: give up.
///
/// - The provider closed the stream before it answered: the peer is
///   connected, but its libp2p-stream inbound queue holds one stream and
///   drops the rest, which happens when many streams (a burst of requests,
///   or a member flooding it) arrive at once. Tried again with a doubling
///   wait from 5 ms, 10 times in all (about 2.5 s).
/// - The stream could not be opened (libp2p-stream may pick a connection
///   that is closing, or the peer is gone): 4 times in all, 5 ms more each
///   time, so that a dead provider fails over quickly.
/// - A refusal or a timed-out attempt is final.
pub(crate) fn retry_after(attempt: u32, error: &TunnelError) -> Option<Duration> {
    match error {
        TunnelError::Handshake { .. } if attempt < 10 => {
            Some(Duration::from_millis(5 << (attempt - 1)))
        }
        TunnelError::Open { .. } if attempt < 4 => Some(Duration::from_millis(5 * attempt as u64)),
        _ => None,
    }
}

/// One attempt of [`handshake`].
async fn handshake_once<H: Serialize>(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    hello: &H,
) -> Result<(Stream, HelloReply), TunnelError> {
    let open = async {
        let stream = control
            .open_stream(peer, protocol)
            .await
            .map_err(|source| TunnelError::Open { peer, source })?;
        let mut stream = stream.compat();
        let handshake_err = |source| TunnelError::Handshake { peer, source };
        write_frame(&mut stream, hello)
            .await
            .map_err(handshake_err)?;
        let reply: HelloReply = read_frame(&mut stream).await.map_err(handshake_err)?;
        if !reply.ok {
            return Err(TunnelError::Refused {
                peer,
                reason: reply.error.unwrap_or_else(|| "no reason given".into()),
            });
        }
        Ok((stream.into_inner(), reply))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, open)
        .await
        .map_err(|_| TunnelError::TimedOut {
            peer,
            after: HANDSHAKE_TIMEOUT,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eof(peer: PeerId) -> TunnelError {
        TunnelError::Handshake {
            peer,
            source: std::io::ErrorKind::UnexpectedEof.into(),
        }
    }

    #[test]
    fn a_dropped_stream_is_opened_again_for_a_few_seconds() {
        let peer = PeerId::random();
        let waits: Vec<Duration> = (1..).map_while(|n| retry_after(n, &eof(peer))).collect();
        assert_eq!(waits.len(), 9, "10 attempts in all");
        assert_eq!(waits[0], Duration::from_millis(5));
        assert!(waits.windows(2).all(|w| w[1] == w[0] * 2));
        let total: Duration = waits.iter().sum();
        assert!(total > Duration::from_secs(2) && total < Duration::from_secs(3));
    }

    #[test]
    fn refusals_and_timeouts_are_final() {
        let peer = PeerId::random();
        let refused = TunnelError::Refused {
            peer,
            reason: "no such service".into(),
        };
        assert_eq!(retry_after(1, &refused), None);
        let timed_out = TunnelError::TimedOut {
            peer,
            after: HANDSHAKE_TIMEOUT,
        };
        assert_eq!(retry_after(1, &timed_out), None);
    }
}
