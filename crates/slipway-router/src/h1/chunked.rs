//! Finding the end of a chunked body (RFC 9112, section 7.1) while its bytes pass through
//! unchanged.
//!
//! The fast path forwards a backend's chunked response to the client as it is, so it never
//! decodes the data; it only has to know where the body ends, so that the upstream connection
//! can carry the next request. [`ChunkedEnd`] follows the framing byte by byte over the size
//! lines and trailers and jumps over chunk data in one step.

/// Why a chunked body could not be followed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadChunk(pub(crate) &'static str);

/// Where the scanner is in the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size; `digits` read so far.
    Size { size: u64, digits: u8 },
    /// After the size: chunk extensions (or whitespace before them) up to the CR.
    Extension { size: u64 },
    /// The LF ending a size line.
    SizeLf { size: u64 },
    /// Inside chunk data, with this many bytes left.
    Data { left: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the final empty line.
    FinalLf,
    /// The body has ended.
    Done,
}

/// Follows a chunked body to its end.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedEnd {
    state: State,
}

/// More than 16 hex digits would overflow a `u64` size.
const MAX_SIZE_DIGITS: u8 = 16;

impl ChunkedEnd {
    pub(crate) fn new() -> ChunkedEnd {
        ChunkedEnd {
            state: State::Size { size: 0, digits: 0 },
        }
    }

    /// Follows the framing over `bytes`, the next bytes of the body. Returns `Some(n)` if the
    /// body ends after the first `n` of them (anything after belongs to no body), `None` if all
    /// of them are body and more is to come.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Data { left } = self.state {
                let take = (bytes.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = match self.state {
                State::Size { size, digits } => match hex_value(byte) {
                    Some(value) if digits < MAX_SIZE_DIGITS => State::Size {
                        size: size << 4 | u64::from(value),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(BadChunk("chunk size too large")),
                    None if digits == 0 => return Err(BadChunk("chunk size missing")),
                    None => match byte {
                        b'\r' => State::SizeLf { size },
                        b';' | b' ' | b'\t' => State::Extension { size },
                        _ => return Err(BadChunk("invalid byte in chunk size")),
                    },
                },
                State::Extension { size } => match byte {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(BadChunk("bare LF in chunk extension")),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } => match (byte, size) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', left) => State::Data { left },
                    _ => return Err(BadChunk("chunk size line not ended by CRLF")),
                },
                State::Data { .. } => unreachable!("handled above"),
                State::DataCr if byte == b'\r' => State::DataLf,
                State::DataLf if byte == b'\n' => State::Size { size: 0, digits: 0 },
                State::DataCr | State::DataLf => {
                    return Err(BadChunk("chunk data not followed by CRLF"));
                }
                State::TrailerStart => match byte {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(BadChunk("bare LF in trailers")),
                    _ => State::Trailer,
                },
                State::Trailer => match byte {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(BadChunk("bare LF in trailers")),
                    _ => State::Trailer,
                },
                State::TrailerLf if byte == b'\n' => State::TrailerStart,
                State::FinalLf if byte == b'\n' => State::Done,
                State::TrailerLf | State::FinalLf => {
                    return Err(BadChunk("trailer line not ended by CRLF"));
                }
                State::Done => unreachable!("returned when reached"),
            };
            if self.state == State::Done {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns where the end was found.
    fn end_in_steps(body: &[u8], step: usize) -> Result<Option<usize>, BadChunk> {
        let mut scanner = ChunkedEnd::new();
        let mut offset = 0;
        for piece in body.chunks(step) {
            if let Some(n) = scanner.feed(piece)? {
                return Ok(Some(offset + n));
            }
            offset += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body =
            b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for step in 1..=body.len() {
            assert_eq!(end_in_steps(body, step), Ok(Some(end)), "step {step}");
        }
    }

    #[test]
    fn trailers_are_part_of_the_body() {
        let body = b"3\r\nabc\r\n0\r\nx-checksum: 1\r\nx-other: 2\r\n\r\n";
        assert_eq!(end_in_steps(body, 1), Ok(Some(body.len())));
        assert_eq!(end_in_steps(body, 7), Ok(Some(body.len())));
    }

    #[test]
    fn an_unfinished_body_needs_more() {
        assert_eq!(end_in_steps(b"5\r\nhel", 2), Ok(None));
        assert_eq!(end_in_steps(b"0\r\n", 2), Ok(None));
        assert_eq!(end_in_steps(b"0\r\n\r", 2), Ok(None));
    }

    #[test]
    fn broken_framing_is_refused() {
        for (body, why) in [
            (&b"\r\n"[..], "chunk size missing"),
            (b"zz\r\n", "chunk size missing"),
            (b"5x\r\n", "invalid byte in chunk size"),
            (b"5\nhello", "invalid byte in chunk size"),
            (b"5;x\r5", "chunk size line not ended by CRLF"),
            (b"2\r\nabc\r\n", "chunk data not followed by CRLF"),
            (b"0\r\nx: 1\n", "bare LF in trailers"),
            (b"11111111111111111\r\n", "chunk size too large"),
        ] {
            assert_eq!(end_in_steps(body, 1), Err(BadChunk(why)), "{body:?}");
        }
    }

    #[test]
    fn sixteen_digit_sizes_are_followed_without_overflow() {
        let mut scanner = ChunkedEnd::new();
        assert_eq!(scanner.feed(b"ffffffffffffffff\r\n"), Ok(None));
        assert_eq!(scanner.feed(&[0u8; 4096]), Ok(None));
    }
}
