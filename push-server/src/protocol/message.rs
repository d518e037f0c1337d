//! Channels, message ids and the pre-encoded message every subscriber shares.
//!
//! A [`Message`] is encoded once, when it enters the node (published here or
//! received from the broker), into one buffer: the WebSocket frame, whose
//! tail is also the body of the SSE event (written around it). Every
//! subscriber gets an `Arc` clone of the same bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Longest channel name accepted (docs/protocol.md, "Channels and messages").
pub const MAX_CHANNEL_LEN: usize = 128;

/// A validated channel name, cheap to clone.
pub type Channel = Arc<str>;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} characters")]
    TooLong,
    #[error("channel name {0:?} may only contain A-Z a-z 0-9 _ . : @ -")]
    BadChar(String),
}

/// Checks a channel name (docs/protocol.md): 1–128 chars of `[A-Za-z0-9_.:@-]`.
pub fn validate_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
    {
        return Err(ChannelError::BadChar(
            name.chars().take(MAX_CHANNEL_LEN).collect(),
        ));
    }
    Ok(())
}

/// A message id, `<ms>-<seq>` as in Redis streams, ordered as a `(ms, seq)` pair.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    /// Milliseconds since the Unix epoch when the id was assigned.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl MessageId {
    pub const ZERO: MessageId = MessageId { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        MessageId { ms, seq }
    }

    /// The length of `<ms>-<seq>`, without writing it.
    pub fn text_len(self) -> usize {
        let digits = |v: u64| v.checked_ilog10().map_or(1, |d| d as usize + 1);
        digits(self.ms) + 1 + digits(self.seq)
    }

    /// Appends `<ms>-<seq>`: what `Display` writes, without `fmt` (every
    /// publish answer carries one).
    pub fn put_text(self, out: &mut Vec<u8>) {
        out.extend_from_slice(IdText::default().of(self));
    }

    /// The next id after `self` at wall-clock time `now_ms`: a clock that
    /// stepped backwards never produces a smaller id.
    pub fn next_at(self, now_ms: u64) -> MessageId {
        if now_ms > self.ms {
            MessageId { ms: now_ms, seq: 0 }
        } else {
            MessageId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

/// Room for an id's text: two `u64`s and a dash.
struct IdText([u8; 41]);

impl Default for IdText {
    fn default() -> Self {
        IdText([0; 41])
    }
}

impl IdText {
    fn of(&mut self, id: MessageId) -> &[u8] {
        let mut n = itoa::Buffer::new();
        let ms = n.format(id.ms).as_bytes();
        self.0[..ms.len()].copy_from_slice(ms);
        self.0[ms.len()] = b'-';
        let at = ms.len() + 1;
        let seq = n.format(id.seq).as_bytes();
        self.0[at..at + seq.len()].copy_from_slice(seq);
        &self.0[..at + seq.len()]
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not `<ms>-<seq>` with two decimal numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message id must look like <ms>-<seq>, e.g. 1732800000000-0")]
pub struct IdError;

impl FromStr for MessageId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let (ms, seq) = s.split_once('-').ok_or(IdError)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()); // leading zeros are fine; parse refuses > u64::MAX
        if !digits(ms) || !digits(seq) {
            return Err(IdError);
        }
        Ok(MessageId {
            ms: ms.parse().map_err(|_| IdError)?,
            seq: seq.parse().map_err(|_| IdError)?,
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What follows the `id:` line in every SSE message event, up to the
/// envelope's first byte.
const SSE_PREFIX: &[u8] = b"event: message\ndata: {";
/// Prefix of the WebSocket `message` frame; the rest is the envelope minus `{`.
const WS_PREFIX: &str = "{\"type\":\"message\",";
/// `id: <id>\n` + [`SSE_PREFIX`]: an id is at most 41 bytes ([`IdText`]).
const SSE_HEAD_MAX: usize = 4 + 41 + 1 + SSE_PREFIX.len();

/// One published message, encoded once for every transport.
///
/// One buffer holds the encoding: the WebSocket frame, whose tail after
/// `{"type":"message",` is the envelope without its `{`. An SSE event is
/// written as three slices — its head (`id: <id>\nevent: message\ndata: {`,
/// kept inline here), that same tail, and `\n\n` — so a retained message
/// costs one heap buffer, not one per transport.
#[derive(Debug)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Channel,
    /// Its id, unique and increasing within the channel.
    pub id: MessageId,
    /// When this node accepted or received it, for the delivery latency metric.
    pub accepted: Instant,
    /// `{"type":"message","channel":…,"id":…,"data":…}`, shared by all WS subscribers.
    ws_frame: Utf8Bytes,
    /// `id: <id>\nevent: message\ndata: {`, in its first `sse_head_len` bytes.
    sse_head: [u8; SSE_HEAD_MAX],
    sse_head_len: u8,
    /// Length of the `id:` line at the start of `sse_head`.
    sse_id_len: u8,
}

impl Message {
    /// Builds a message from `data`, which must be one compact JSON value
    /// (no raw newlines: [`compact_json`] or a serializer guarantees it).
    /// Data that is not UTF-8 (never from this node, which publishes only
    /// checked JSON) is carried as `null`.
    pub fn new(channel: Channel, id: MessageId, data: &[u8], accepted: Instant) -> Message {
        let data = std::str::from_utf8(data).unwrap_or("null");
        let id_len = id.text_len();
        // Exact, so that the buffer never grows (a reallocation per message,
        // and retained history twice its size, when this was one short).
        let len = WS_PREFIX.len()
            + "\"channel\":\"".len()
            + channel.len()
            + "\",\"id\":\"".len()
            + id_len
            + "\",\"data\":".len()
            + data.len()
            + 1;
        // Built as text from text (the channel and id are ASCII): nothing
        // is checked again as UTF-8.
        let mut ws = String::with_capacity(len);
        ws.push_str(WS_PREFIX);
        ws.push_str("\"channel\":\"");
        ws.push_str(&channel);
        ws.push_str("\",\"id\":\"");
        let id_at = ws.len();
        let mut n = itoa::Buffer::new();
        ws.push_str(n.format(id.ms));
        ws.push('-');
        ws.push_str(n.format(id.seq));
        ws.push_str("\",\"data\":");
        ws.push_str(data);
        ws.push('}');
        debug_assert_eq!(ws.len(), len);

        let mut sse_head = [0u8; SSE_HEAD_MAX];
        let mut at = 0;
        let mut put = |part: &[u8]| {
            sse_head[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        };
        put(b"id: ");
        // The id as the frame already has it: formatted once.
        put(&ws.as_bytes()[id_at..id_at + id_len]);
        put(b"\n");
        let sse_id_len = 5 + id_len;
        put(SSE_PREFIX);
        Message {
            channel,
            id,
            accepted,
            ws_frame: Utf8Bytes::from(ws),
            sse_head,
            // At most SSE_HEAD_MAX (68) bytes.
            sse_head_len: at as u8,
            sse_id_len: sse_id_len as u8,
        }
    }

    /// The WebSocket text frame payload (cheap clone of shared bytes).
    pub fn ws_frame(&self) -> &Utf8Bytes {
        &self.ws_frame
    }

    /// The envelope after its `{`: `"channel":…,"id":…,"data":…}`.
    fn tail(&self) -> &[u8] {
        &self.ws_frame.as_bytes()[WS_PREFIX.len()..]
    }

    /// The SSE event with `id: <this id>`, the whole event of a stream of
    /// one channel, as the slices to write in order.
    pub fn sse_framed(&self) -> [&[u8]; 3] {
        [
            &self.sse_head[..usize::from(self.sse_head_len)],
            self.tail(),
            b"\n\n",
        ]
    }

    /// The SSE event without its `id:` line, for streams whose cursor
    /// holds more than this id.
    pub fn sse_event(&self) -> [&[u8]; 3] {
        let [head, tail, end] = self.sse_framed();
        [&head[usize::from(self.sse_id_len)..], tail, end]
    }

    /// Length of [`Message::sse_framed`].
    pub fn sse_framed_len(&self) -> usize {
        usize::from(self.sse_head_len) + self.tail().len() + 2
    }

    /// Length of the envelope JSON `{"channel","id","data"}`.
    pub fn envelope_len(&self) -> usize {
        1 + self.tail().len()
    }

    /// Appends the envelope JSON `{"channel","id","data"}`.
    pub fn put_envelope(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        out.extend_from_slice(self.tail());
    }
}

/// Deepest nesting of arrays and objects accepted in a message's `data`.
///
/// The envelope adds up to three levels (history page, envelope, WS frame)
/// and common JSON parsers stop at 128 (serde_json) or thereabouts, so a
/// deeper `data` could be accepted, stored and then be unreadable to every
/// subscriber. Published data deeper than this is refused as `invalid_json`.
pub const MAX_DATA_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in valid JSON text.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuses `data` nested deeper than [`MAX_DATA_DEPTH`].
pub fn check_depth(json: &[u8]) -> Result<(), String> {
    if json_depth(json) > MAX_DATA_DEPTH {
        return Err(format!(
            "data is nested deeper than {MAX_DATA_DEPTH} levels of arrays and objects"
        ));
    }
    Ok(())
}

/// Removes insignificant whitespace from valid JSON text, so that a message
/// never holds a raw newline (SSE `data:` lines) and is as small as possible.
/// The input must already be valid JSON.
pub fn compact_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_is_what_display_writes() {
        for id in [
            MessageId::ZERO,
            MessageId::new(1_796_641_670_008, 1),
            MessageId::new(10, 9),
            MessageId::new(999, 1000),
            MessageId::new(u64::MAX, u64::MAX),
        ] {
            let mut out = b"x".to_vec();
            id.put_text(&mut out);
            assert_eq!(out, format!("x{id}").into_bytes());
            assert_eq!(id.text_len(), id.to_string().len());
            let m = Message::new("c".into(), id, b"1", Instant::now());
            assert_eq!(
                envelope(&m),
                format!("{{\"channel\":\"c\",\"id\":\"{id}\",\"data\":1}}").as_bytes()
            );
            assert_eq!(
                m.sse_framed()[0],
                format!("id: {id}\nevent: message\ndata: {{").as_bytes()
            );
        }
    }

    #[test]
    fn ids_parse_print_and_order() {
        let a: MessageId = "1732800000000-0".parse().unwrap();
        let b: MessageId = "1732800000000-1".parse().unwrap();
        let c: MessageId = "1732800000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(a.to_string(), "1732800000000-0");
        assert_eq!(
            "007-0018446744073709551615".parse::<MessageId>(),
            Ok(MessageId::new(7, u64::MAX))
        );
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-1-1",
            "1 -1",
            "+1-1",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn next_id_is_monotonic_even_if_the_clock_steps_back() {
        let a = MessageId::new(100, 5);
        assert_eq!(a.next_at(100), MessageId::new(100, 6));
        assert_eq!(a.next_at(99), MessageId::new(100, 6));
        assert_eq!(a.next_at(101), MessageId::new(101, 0));
    }

    #[test]
    fn channel_names() {
        assert!(validate_channel("news").is_ok());
        assert!(validate_channel("user:42@x.y-z_").is_ok());
        assert!(validate_channel(&"a".repeat(128)).is_ok());
        assert_eq!(
            validate_channel(&"a".repeat(129)),
            Err(ChannelError::TooLong)
        );
        assert_eq!(validate_channel(""), Err(ChannelError::Empty));
        for bad in ["a b", "a/b", "ä", "a,b", "a*", "a\n"] {
            assert!(
                matches!(validate_channel(bad), Err(ChannelError::BadChar(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn encodings_share_one_envelope() {
        let m = Message::new(
            "news".into(),
            MessageId::new(7, 1),
            br#"{"a":[1,2]}"#,
            Instant::now(),
        );
        assert_eq!(
            envelope(&m),
            br#"{"channel":"news","id":"7-1","data":{"a":[1,2]}}"#
        );
        assert_eq!(
            m.ws_frame().as_str(),
            r#"{"type":"message","channel":"news","id":"7-1","data":{"a":[1,2]}}"#
        );
        assert_eq!(m.sse_event().concat(), b"event: message\ndata: {\"channel\":\"news\",\"id\":\"7-1\",\"data\":{\"a\":[1,2]}}\n\n");
        assert_eq!(
            m.sse_framed().concat(),
            [&b"id: 7-1\n"[..], &m.sse_event().concat()].concat()
        );
        assert_eq!(m.sse_framed_len(), m.sse_framed().concat().len());
        assert_eq!(m.envelope_len(), envelope(&m).len());
        // One heap buffer: the SSE event's body is the frame's own bytes.
        assert_eq!(
            m.sse_framed()[1].as_ptr(),
            m.ws_frame().as_bytes()[WS_PREFIX.len()..].as_ptr()
        );
    }

    #[test]
    fn data_that_is_not_utf8_is_carried_as_null() {
        let m = Message::new("c".into(), MessageId::new(1, 0), b"\xff", Instant::now());
        assert_eq!(envelope(&m), br#"{"channel":"c","id":"1-0","data":null}"#);
    }

    fn envelope(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.put_envelope(&mut out);
        out
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(br#"[{"a":[1]},[]]"#), 3);
        assert_eq!(json_depth(br#"["[[[\"[[", {"}":"{{"}]"#), 2);
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_depth(deep.as_bytes()).is_err());
        assert!(check_depth(&deep.as_bytes()[1..129]).is_ok());
    }

    #[test]
    fn compaction_keeps_strings() {
        let src = b"{ \"a\" : \"x y\\\" \\n z\" ,\n\r\t\"b\": [1, 2] }";
        assert_eq!(
            compact_json(src),
            b"{\"a\":\"x y\\\" \\n z\",\"b\":[1,2]}".to_vec()
        );
    }
}
