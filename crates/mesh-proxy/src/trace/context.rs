//! W3C Trace Context: parsing and formatting `traceparent`
//! (`00-<trace-id>-<parent-id>-<flags>`, lowercase hex), and new ids.
//! `tracestate` is never parsed: devmesh forwards it unchanged.

use std::fmt;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;
/// Offset of the parent id in a `traceparent` value.
pub const PARENT_OFFSET: usize = 36;

/// A 16-byte trace id, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// The trace a request belongs to and the span that is its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent: SpanId,
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// Why a `traceparent` value was not used (a new trace starts instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Not four dash-separated fields of the right lengths.
    #[error("traceparent is not version-trace_id-parent_id-flags")]
    Shape,
    /// A field is not lowercase hex.
    #[error("traceparent has a field that is not lowercase hex")]
    Hex,
    /// Version `ff` is forbidden.
    #[error("traceparent version ff is invalid")]
    Version,
    /// An all-zero trace or parent id.
    #[error("traceparent has an all-zero trace or parent id")]
    Zero,
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes lowercase hex into `out` (whose length is half the text's).
fn decode_hex(text: &[u8], out: &mut [u8]) -> Result<(), TraceParentError> {
    if text.len() != out.len() * 2 {
        return Err(TraceParentError::Shape);
    }
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let (hi, lo) = (hex_digit(pair[0]), hex_digit(pair[1]));
        *byte = (hi.ok_or(TraceParentError::Hex)? << 4) | lo.ok_or(TraceParentError::Hex)?;
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out` (twice as long).
pub fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

fn fmt_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut buf = [0u8; 32];
    let out = &mut buf[..bytes.len() * 2];
    encode_hex(bytes, out);
    f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(&self.0, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Random bytes, never all zero: from a per-thread generator (splitmix64)
/// seeded once from the OS, since trace ids need to be unique, not secret,
/// and a system call per request costs more than the rest of the id work.
fn random<const N: usize>() -> [u8; N] {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    let mut bytes = [0u8; N];
    while bytes.iter().all(|b| *b == 0) {
        for chunk in bytes.chunks_mut(8) {
            let next = STATE.with(|s| {
                let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                s.set(x);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            });
            chunk.copy_from_slice(&next.to_le_bytes()[..chunk.len()]);
        }
    }
    bytes
}

/// A generator's seed: OS randomness, or std's per-process random hash
/// keys should the OS source fail.
fn seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_ok() {
        return u64::from_le_bytes(seed);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos()),
    );
    h.finish()
}

impl TraceId {
    /// A new random trace id.
    pub fn random() -> Self {
        Self(random())
    }
}

impl SpanId {
    /// A new random span id.
    pub fn random() -> Self {
        Self(random())
    }

    /// Parses 16 lowercase hex digits.
    pub fn parse(text: &[u8]) -> Result<Self, TraceParentError> {
        let mut id = [0u8; 8];
        decode_hex(text, &mut id)?;
        if id == [0; 8] {
            return Err(TraceParentError::Zero);
        }
        Ok(Self(id))
    }
}

impl TraceParent {
    /// Parses a `traceparent` value. Versions above 00 are read as 00 when
    /// their first four fields fit, as the spec asks.
    pub fn parse(value: &[u8]) -> Result<Self, TraceParentError> {
        let value = value.trim_ascii();
        let fields: Vec<&[u8]> = value.splitn(5, |b| *b == b'-').collect();
        let [version, trace, parent, flags, rest @ ..] = fields.as_slice() else {
            return Err(TraceParentError::Shape);
        };
        let mut v = [0u8; 1];
        decode_hex(version, &mut v)?;
        match (v[0], rest) {
            (0xff, _) => return Err(TraceParentError::Version),
            (0, [_, ..]) => return Err(TraceParentError::Shape),
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        decode_hex(trace, &mut trace_id)?;
        let mut f = [0u8; 1];
        decode_hex(flags, &mut f)?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::Zero);
        }
        Ok(Self {
            trace_id: TraceId(trace_id),
            parent: SpanId::parse(parent)?,
            flags: f[0],
        })
    }

    /// A new sampled trace whose root is `span`.
    pub fn new_root(span: SpanId) -> Self {
        Self {
            trace_id: TraceId::random(),
            parent: span,
            flags: 1,
        }
    }

    /// The same trace with `span` as the parent.
    pub fn child(self, span: SpanId) -> Self {
        Self {
            parent: span,
            ..self
        }
    }

    /// The version-00 header value.
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        encode_hex(&self.trace_id.0, &mut out[3..35]);
        encode_hex(&self.parent.0, &mut out[PARENT_OFFSET..52]);
        encode_hex(&[self.flags], &mut out[53..]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent.to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(
            &EXAMPLE[PARENT_OFFSET..PARENT_OFFSET + 16],
            "00f067aa0ba902b7"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let cases = [
            ("", TraceParentError::Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                TraceParentError::Shape,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::Hex,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::Zero,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::Zero,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                TraceParentError::Shape,
            ),
            (&format!("{EXAMPLE}-extra"), TraceParentError::Shape),
        ];
        for (value, want) in cases {
            assert_eq!(TraceParent::parse(value.as_bytes()), Err(want), "{value}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let tp = TraceParent::parse(v.as_bytes()).unwrap();
        assert_eq!(tp.to_string(), EXAMPLE, "forwarded as version 00");
    }

    #[test]
    fn ids_are_distinct_across_threads() {
        let ids: Vec<[u8; 16]> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..1000).map(|_| TraceId::random().0).collect::<Vec<_>>())
            })
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn children_keep_the_trace_and_new_ids_are_never_zero() {
        let root = TraceParent::new_root(SpanId::random());
        assert_ne!(root.trace_id.0, [0; 16]);
        assert_eq!(root.flags, 1);
        let span = SpanId::random();
        let child = root.child(span);
        assert_eq!((child.trace_id, child.parent), (root.trace_id, span));
        assert_ne!(SpanId::random(), SpanId::random());
        let parsed = TraceParent::parse(child.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, child);
    }
}
