//! The `/devmesh/inspect/1` messages: a caller's node asks a provider's
//! node for its capture of a trace; one length-prefixed JSON message each
//! way (a `u32` length, big-endian), both bounded.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The protocol, for namespace members only.
pub const PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/devmesh/inspect/1");
/// The message format spoken.
pub const VERSION: u32 = 1;
/// Largest question.
pub const MAX_ASK: usize = 1024;
/// Largest answer: an entry with two 64 KiB body prefixes, base64, and
/// its headers fit well.
pub const MAX_ANSWER: usize = 1 << 20;

/// A question: the provider's entry of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub v: u32,
    /// 32 hex digits.
    pub trace_id: String,
}

impl Ask {
    /// Whether the trace id is 32 lowercase hex digits.
    pub fn valid(&self) -> bool {
        self.trace_id.len() == 32
            && self
                .trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// The answer: the entry, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub v: u32,
    /// The provider's entry as JSON (an [`Entry`](super::Entry)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a message could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("message of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("reading or writing the stream")]
    Io(#[from] std::io::Error),
    #[error("malformed message")]
    Json(#[from] serde_json::Error),
}

/// `value` as a message: its length and JSON.
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, WireError> {
    let json = serde_json::to_vec(value)?;
    if json.len() > max {
        return Err(WireError::TooLarge {
            len: json.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(json.len() + 4);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Writes one message of at most `max` bytes.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    value: &T,
    max: usize,
) -> Result<(), WireError> {
    io.write_all(&encode(value, max)?).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one message of at most `max` bytes.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    io: &mut R,
    max: usize,
) -> Result<T, WireError> {
    let len = io.read_u32().await? as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_bounds_hold() {
        let ask = Ask {
            v: VERSION,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        assert!(ask.valid());
        let bytes = encode(&ask, MAX_ASK).unwrap();
        let back: Ask = read(&mut &bytes[..], MAX_ASK).await.unwrap();
        assert_eq!(back, ask);
        let e = read::<_, Ask>(&mut &bytes[..], 8).await.unwrap_err();
        assert!(matches!(e, WireError::TooLarge { max: 8, .. }), "{e}");
        let big = Answer {
            v: VERSION,
            entry: Some(serde_json::json!("x".repeat(100))),
            reason: None,
        };
        assert!(matches!(encode(&big, 50), Err(WireError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn malformed_messages_are_errors() {
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{nope");
        let e = read::<_, Ask>(&mut &junk[..], MAX_ASK).await.unwrap_err();
        assert!(matches!(e, WireError::Json(_)), "{e}");
        let mut unknown = Vec::new();
        let text = br#"{"v":1,"trace_id":"x","extra":1}"#;
        unknown.extend_from_slice(&(text.len() as u32).to_be_bytes());
        unknown.extend_from_slice(text);
        assert!(read::<_, Ask>(&mut &unknown[..], MAX_ASK).await.is_err());
        let short = [0u8, 0, 0, 9, b'{'];
        assert!(matches!(
            read::<_, Ask>(&mut &short[..], MAX_ASK).await,
            Err(WireError::Io(_))
        ));
        let bad = Ask {
            v: 1,
            trace_id: "ZZ".into(),
        };
        assert!(!bad.valid());
    }
}
