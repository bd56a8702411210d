//! The data phase of a `/devmesh/tcp/1` stream, and the splice between a
//! TCP connection and such a stream.
//!
//! Each direction is a sequence of frames: a big-endian `u32` length, then
//! that many bytes. A zero-length frame says the sender's side half-closed
//! (its TCP peer sent FIN); the receiver then half-closes its own TCP
//! connection and the other direction goes on. A stream that ends before
//! that frame was ended by a reset, a lost connection or a dead node, which
//! yamux shows as a plain end of data; the frames are what tells it from a
//! clean close, so that the splice can reset its TCP side in turn.

use std::{future::Future, io, pin::pin};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes in one frame: what one read of the TCP side gives at most.
pub(crate) const MAX_FRAME: usize = 128 * 1024;
/// Length of a frame's header.
const HEADER: usize = 4;

/// Why a splice ended with a reset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Reset {
    /// The TCP connection failed (reset by its peer, or a write failed).
    #[error("the TCP connection failed")]
    Tcp(#[source] io::Error),
    /// The stream failed or ended without its end frame: the other node
    /// reset it, died, or lost the connection.
    #[error("the tunnel stream ended without a clean close (reset, or the other node went away)")]
    Stream(#[source] io::Error),
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("malformed frame of {0} bytes (at most {MAX_FRAME})")]
    Malformed(usize),
}

/// What a clean splice moved: bytes from the TCP side to the stream, and
/// from the stream to the TCP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// Reads the TCP side and sends it as frames until its end, then sends the
/// end frame and closes the stream's write half.
async fn encode<R, W>(mut tcp: R, mut stream: W) -> Result<u64, Reset>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; HEADER + MAX_FRAME];
    let mut moved = 0u64;
    loop {
        let n = tcp.read(&mut buf[HEADER..]).await.map_err(Reset::Tcp)?;
        buf[..HEADER].copy_from_slice(&(n as u32).to_be_bytes());
        stream
            .write_all(&buf[..HEADER + n])
            .await
            .map_err(Reset::Stream)?;
        if n == 0 {
            stream.flush().await.map_err(Reset::Stream)?;
            // The stream's own FIN; the end frame already said it.
            let _ = stream.shutdown().await;
            return Ok(moved);
        }
        moved += n as u64;
    }
}

/// Reads frames from the stream and writes their bytes to the TCP side;
/// at the end frame, half-closes the TCP side. Returns the bytes moved.
/// Public for the fuzz target of the frame decoder; [`splice`] is what
/// tunnels use.
pub async fn decode<R, W>(mut stream: R, mut tcp: W) -> Result<u64, Reset>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    loop {
        let len = stream.read_u32().await.map_err(Reset::Stream)? as usize;
        if len == 0 {
            tcp.shutdown().await.map_err(Reset::Tcp)?;
            return Ok(moved);
        }
        if len > MAX_FRAME {
            return Err(Reset::Malformed(len));
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len());
            let n = stream.read(&mut buf[..want]).await.map_err(Reset::Stream)?;
            if n == 0 {
                return Err(Reset::Stream(io::ErrorKind::UnexpectedEof.into()));
            }
            tcp.write_all(&buf[..n]).await.map_err(Reset::Tcp)?;
            left -= n;
        }
        tcp.flush().await.map_err(Reset::Tcp)?;
        moved += len as u64;
    }
}

/// Splices `tcp` and `stream` until both directions closed cleanly, or
/// until the first reset of either (the caller then resets the TCP side
/// and drops the stream without closing it, which resets it).
pub async fn splice<T, S>(tcp: T, stream: S) -> Result<Moved, Reset>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tcp_read, tcp_write) = tokio::io::split(tcp);
    let (stream_read, stream_write) = tokio::io::split(stream);
    both(
        encode(tcp_read, stream_write),
        decode(stream_read, tcp_write),
    )
    .await
    .map(|(up, down)| Moved { up, down })
}

/// Runs both directions; the first error ends both.
async fn both<A, B>(up: A, down: B) -> Result<(u64, u64), Reset>
where
    A: Future<Output = Result<u64, Reset>>,
    B: Future<Output = Result<u64, Reset>>,
{
    let (mut up, mut down) = (pin!(up), pin!(down));
    let (mut up_done, mut down_done) = (None, None);
    loop {
        tokio::select! {
            r = up.as_mut(), if up_done.is_none() => up_done = Some(r?),
            r = down.as_mut(), if down_done.is_none() => down_done = Some(r?),
        }
        if let (Some(u), Some(d)) = (up_done, down_done) {
            return Ok((u, d));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    /// A splice between one end of `client` and one end of `stream`, in a
    /// task.
    fn spawn_splice(
        tcp: tokio::io::DuplexStream,
        stream: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Result<Moved, Reset>> {
        tokio::spawn(splice(tcp, stream))
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_half_close_is_kept() {
        // client <-> [splice A] <-> stream <-> [splice B] <-> server
        let (mut client, a_tcp) = duplex(1024);
        let (a_stream, b_stream) = duplex(1024);
        let (b_tcp, mut server) = duplex(1024);
        let a = spawn_splice(a_tcp, a_stream);
        let b = spawn_splice(b_tcp, b_stream);

        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // Half-close: the server must see the end, and still answer.
            client.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let moved = a.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Moved {
                up: 300_000,
                down: 4
            }
        );
        assert_eq!(
            b.await.unwrap().unwrap(),
            Moved {
                up: 4,
                down: 300_000
            }
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_its_end_frame_is_a_reset() {
        let (mut client, a_tcp) = duplex(1024);
        let (a_stream, mut peer) = duplex(1024);
        let a = spawn_splice(a_tcp, a_stream);
        // Some data, then the other node vanishes.
        peer.write_all(&3u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        let mut three = [0u8; 3];
        client.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"abc");
        drop(peer);
        let ended = a.await.unwrap();
        assert!(matches!(ended, Err(Reset::Stream(_))), "{ended:?}");
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let (_client, a_tcp) = duplex(1024);
        let (a_stream, mut peer) = duplex(1024);
        let a = spawn_splice(a_tcp, a_stream);
        peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let ended = a.await.unwrap();
        assert!(
            matches!(ended, Err(Reset::Malformed(n)) if n == u32::MAX as usize),
            "{ended:?}"
        );
    }
}
