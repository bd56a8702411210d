//! The data of a chunked body as it passes, without its framing (sizes,
//! extensions, trailers): the pure decoder the provider's capture uses.

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dechunk {
    /// Reading a chunk-size line: the size so far, whether a digit came,
    /// and whether an extension started.
    Size { size: u64, digits: bool, ext: bool },
    /// This many data bytes of the chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk: the length of the current one.
    Trailer(usize),
    /// The body ended.
    Done,
}

/// A chunked body that is not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

impl Default for Dechunk {
    fn default() -> Self {
        Dechunk::Size {
            size: 0,
            digits: false,
            ext: false,
        }
    }
}

impl Dechunk {
    /// Feeds `bytes`, giving each piece of data to `data`; `Ok(true)` once
    /// the body ended (bytes after its end are not looked at).
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<bool, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Dechunk::Done => return Ok(true),
                Dechunk::Data(left) => {
                    let n = (left.min((bytes.len() - i) as u64)) as usize;
                    data(&bytes[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    if left == 0 {
                        Dechunk::DataEnd
                    } else {
                        Dechunk::Data(left)
                    }
                }
                Dechunk::Size { size, digits, ext } => {
                    i += 1;
                    match b {
                        b'\n' if !digits => return Err(Malformed),
                        b'\n' if size == 0 => Dechunk::Trailer(0),
                        b'\n' => Dechunk::Data(size),
                        b'\r' => Dechunk::Size { size, digits, ext },
                        _ if ext => Dechunk::Size { size, digits, ext },
                        b';' | b' ' | b'\t' => Dechunk::Size {
                            size,
                            digits,
                            ext: true,
                        },
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(Malformed)?;
                            let size = size.checked_mul(16).ok_or(Malformed)? + u64::from(d);
                            Dechunk::Size {
                                size,
                                digits: true,
                                ext,
                            }
                        }
                    }
                }
                Dechunk::DataEnd => {
                    i += 1;
                    match b {
                        b'\r' => Dechunk::DataEnd,
                        b'\n' => Dechunk::default(),
                        _ => return Err(Malformed),
                    }
                }
                Dechunk::Trailer(len) => {
                    i += 1;
                    match b {
                        b'\n' if len == 0 => Dechunk::Done,
                        b'\n' => Dechunk::Trailer(0),
                        b'\r' => Dechunk::Trailer(len),
                        _ => Dechunk::Trailer(len + 1),
                    }
                }
            };
        }
        Ok(*self == Dechunk::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, Result<bool, Malformed>) {
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        let mut r = Ok(false);
        for p in pieces {
            r = d.feed(p, |b| out.extend_from_slice(b));
            if r != Ok(false) {
                break;
            }
        }
        (out, r)
    }

    #[test]
    fn chunks_decode_across_any_split() {
        let whole: &[u8] = b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\n";
        for cut in 0..whole.len() {
            let (data, r) = decode(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(r, Ok(true), "cut at {cut}");
            assert_eq!(data, b"abc0123456789", "cut at {cut}");
        }
        assert_eq!(decode(&[b"0\r\n\r\n"]), (vec![], Ok(true)));
        assert_eq!(decode(&[b"5\r\nab"]), (b"ab".to_vec(), Ok(false)));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert_eq!(decode(&[b"zz\r\n"]).1, Err(Malformed));
        assert_eq!(decode(&[b"\r\n"]).1, Err(Malformed));
        assert_eq!(decode(&[b"1\r\naXY"]).1, Err(Malformed));
        assert_eq!(decode(&[b"ffffffffffffffffff\r\n"]).1, Err(Malformed));
    }
}
