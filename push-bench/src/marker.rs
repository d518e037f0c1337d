//! The benchmark payload. Every published body carries a marker
//! `pb:<run>:<window>:<seq>:<sent_us>:` padded with `x` to the payload size. The marker is
//! found by substring search in whatever the server wraps around it (Push's JSON envelope,
//! nchan's raw body, an SSE `data:` line), so no server-specific parsing is needed. Only
//! `[a-z0-9:]` is used so that no server escapes it.
//!
//! `sent_us` is microseconds since the generator started, from the monotonic clock: publisher
//! and subscribers live in the same process, so publish→receive latency needs no clock sync.

/// A decoded marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Random per process, so messages replayed from an earlier run's history are ignored.
    pub run: u32,
    /// Measurement window (0 = readiness probes).
    pub window: u32,
    /// Sequence number within the channel and window.
    pub seq: u32,
    /// Send time, µs since the generator's start.
    pub sent_us: u64,
}

const PREFIX: &[u8] = b"pb:";

impl Marker {
    /// Appends the payload (marker plus padding up to `size` bytes) to `out`.
    pub fn encode(&self, size: usize, out: &mut Vec<u8>) {
        let start = out.len();
        // write! into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(
            out,
            format_args!(
                "pb:{}:{}:{}:{}:",
                self.run, self.window, self.seq, self.sent_us
            ),
        );
        let written = out.len() - start;
        if written < size {
            out.resize(start + size, b'x');
        }
    }

    /// Finds and decodes the first well-formed marker in `buf`.
    pub fn find(buf: &[u8]) -> Option<Marker> {
        let mut from = 0;
        while let Some(at) = find_subslice(&buf[from..], PREFIX) {
            let start = from + at + PREFIX.len();
            if let Some(m) = Self::decode(&buf[start..]) {
                return Some(m);
            }
            from = start;
        }
        None
    }

    /// Decodes the fields after the prefix.
    fn decode(mut rest: &[u8]) -> Option<Marker> {
        let mut fields = [0u64; 4];
        for field in &mut fields {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || digits > 20 || rest.get(digits) != Some(&b':') {
                return None;
            }
            let mut v: u64 = 0;
            for &d in &rest[..digits] {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
            *field = v;
            rest = &rest[digits + 1..];
        }
        Some(Marker {
            run: u32::try_from(fields[0]).ok()?,
            window: u32::try_from(fields[1]).ok()?,
            seq: u32::try_from(fields[2]).ok()?,
            sent_us: fields[3],
        })
    }
}

/// Position of `needle` in `hay`. Payloads are small, so a first-byte scan is enough.
pub fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let pos = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = i + pos;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_padding() {
        let m = Marker {
            run: 42,
            window: 3,
            seq: 17,
            sent_us: 123_456_789,
        };
        let mut out = Vec::new();
        m.encode(64, &mut out);
        assert_eq!(out.len(), 64);
        assert_eq!(Marker::find(&out), Some(m));
    }

    #[test]
    fn longer_than_size_is_not_truncated() {
        let m = Marker {
            run: u32::MAX,
            window: 1,
            seq: 1,
            sent_us: u64::MAX,
        };
        let mut out = Vec::new();
        m.encode(8, &mut out);
        assert_eq!(Marker::find(&out), Some(m));
    }

    #[test]
    fn found_inside_envelopes() {
        let m = Marker {
            run: 1,
            window: 2,
            seq: 3,
            sent_us: 4,
        };
        let mut body = Vec::new();
        m.encode(16, &mut body);
        let body = String::from_utf8(body).unwrap();
        let ws = format!(r#"{{"type":"message","channel":"b0","id":"1-0","data":"{body}"}}"#);
        assert_eq!(Marker::find(ws.as_bytes()), Some(m));
        let sse = format!("data: {{\"channel\":\"b0\",\"data\":\"{body}\"}}");
        assert_eq!(Marker::find(sse.as_bytes()), Some(m));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Marker::find(b"no marker"), None);
        assert_eq!(Marker::find(b"pb:1:2:3"), None);
        assert_eq!(Marker::find(b"pb:1:a:3:4:"), None);
        assert_eq!(
            Marker::find(b"pp:pb:pb:1:2:3:4:").map(|m| m.sent_us),
            Some(4)
        );
    }

    #[test]
    fn subslice() {
        assert_eq!(find_subslice(b"abcabd", b"abd"), Some(3));
        assert_eq!(find_subslice(b"ab", b"abc"), None);
        assert_eq!(find_subslice(b"", b"a"), None);
    }
}
