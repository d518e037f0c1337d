//! Just enough HTTP/1.1 for the generator: response heads and chunked bodies. A hand-rolled
//! parser keeps the client cheap (no per-response allocation beyond the read buffer), so the
//! generator is not what saturates first.

use crate::marker::find_subslice;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head including the blank line.
    pub len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// `Connection: close` was sent.
    pub close: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` when incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = find_subslice(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = Head {
        status,
        len: end + 4,
        content_length: None,
        chunked: false,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

/// Incremental decoder for `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    size: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Chunk extensions up to the end of the size line.
    SizeLine,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last (empty) chunk; `size` counts bytes of the current line.
    Trailer,
    Done,
}

impl Chunked {
    /// Feeds raw bytes; appends decoded body bytes to `out`. Returns how many input bytes were
    /// consumed (all of them unless the body ended) or an error for malformed framing.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let total = input.len();
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or("chunk size overflow")?;
                        }
                        b';' | b' ' | b'\t' | b'\r' => self.state = ChunkState::SizeLine,
                        b'\n' => self.end_size_line(),
                        _ => return Err(format!("bad chunk size byte {b:#x}")),
                    }
                }
                ChunkState::SizeLine => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\n' {
                        self.end_size_line();
                    }
                }
                ChunkState::Data => {
                    let n = self.size.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.size -= n;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\n' {
                        self.state = ChunkState::Size;
                    } else if b != b'\r' {
                        return Err("missing CRLF after chunk".into());
                    }
                }
                ChunkState::Trailer => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\n' {
                        if self.size == 0 {
                            self.state = ChunkState::Done;
                        }
                        self.size = 0;
                    } else if b != b'\r' {
                        self.size += 1;
                    }
                }
                ChunkState::Done => break,
            }
        }
        Ok(total - input.len())
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Trailer
        } else {
            ChunkState::Data
        };
    }

    /// The terminating chunk and trailers have been read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_fields() {
        let raw = b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbody";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            h,
            Head {
                status: 202,
                len: raw.len() - 4,
                content_length: Some(12),
                chunked: false,
                close: true
            }
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let h = parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.chunked);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_byte_by_byte_and_whole() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut whole = Chunked::default();
        let mut out = Vec::new();
        let used = whole.feed(raw, &mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert!(whole.done());
        assert_eq!(&raw[used..], b"NEXT");

        let mut split = Chunked::default();
        let mut out = Vec::new();
        for b in &raw[..raw.len() - 4] {
            split.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, b"hello world");
        assert!(split.done());
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut c = Chunked::default();
        assert!(c.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }
}
