//! The wire contract of docs/protocol.md, without I/O: channel names, message
//! ids and the pre-encoded [`Message`], SSE cursors, WebSocket client frames
//! and the server's control frames, and the one error vocabulary. Depends on
//! nothing else of the crate; the fuzz targets call it directly.

pub mod cursor;
pub mod error;
pub mod frames;
pub mod message;

pub use error::{Disconnect, Error, ErrorCode};
pub use message::{Channel, Message, MessageId};

use serde_json::value::RawValue;

/// Parses `channels=a,b` (empty entries ignored, duplicates removed, order
/// kept) and checks names and count.
pub fn parse_channels(list: Option<&str>, max: usize) -> Result<Vec<Channel>, Error> {
    let mut out: Vec<Channel> = Vec::new();
    for name in list.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        message::validate_channel(name)?;
        if !out.iter().any(|c| &**c == name) {
            out.push(name.into());
        }
    }
    if out.len() > max {
        return Err(Error::new(
            ErrorCode::TooManyChannels,
            format!("a connection may hold at most {max} subscriptions"),
        ));
    }
    Ok(out)
}

/// What a publisher sends as a message's `data`, before the node checks it.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// A JSON value already parsed as such (a WebSocket frame's or a batch
    /// item's `data`).
    Json(&'a RawValue),
    /// An HTTP body with a JSON content type: checked here.
    JsonBody(&'a [u8]),
    /// Any other HTTP body: stored as a JSON string of its UTF-8 text.
    Text(&'a [u8]),
}

impl Data<'_> {
    /// Size as received, compared with `max_message_bytes`.
    pub fn size(&self) -> usize {
        match self {
            Data::Json(raw) => raw.get().len(),
            Data::JsonBody(b) | Data::Text(b) => b.len(),
        }
    }

    /// The `data` JSON as stored and sent: one compact value, no raw newline,
    /// nested at most [`message::MAX_DATA_DEPTH`] deep.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let invalid_json = |m: String| Error::new(ErrorCode::InvalidJson, m);
        match self {
            Data::Json(raw) => {
                message::check_depth(raw.get().as_bytes()).map_err(invalid_json)?;
                Ok(message::compact_json(raw.get().as_bytes()))
            }
            Data::JsonBody(body) => {
                serde_json::from_slice::<&RawValue>(body)
                    .map_err(|e| invalid_json(format!("body is not valid JSON: {e}")))?;
                message::check_depth(body).map_err(invalid_json)?;
                Ok(message::compact_json(body))
            }
            Data::Text(body) => {
                let text = std::str::from_utf8(body).map_err(|_| {
                    Error::new(ErrorCode::InvalidBody, "a text body must be valid UTF-8")
                })?;
                // Most text needs no escape: quoted as it is, without
                // serde_json's per-byte escape table (the personal rows'
                // hottest single function, docs/benchmarks.md).
                // (`fold`, not `all`: no early exit, so it vectorizes.)
                let plain = !text.bytes().fold(false, |escape, b| {
                    escape | (b < 0x20) | (b == b'"') | (b == b'\\')
                });
                if plain {
                    let mut out = Vec::with_capacity(text.len() + 2);
                    out.push(b'"');
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'"');
                    return Ok(out);
                }
                serde_json::to_vec(text)
                    .map_err(|e| Error::new(ErrorCode::InvalidBody, e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_quoted_as_serde_json_quotes_it() {
        let mut samples: Vec<String> = (0u8..=127).map(|b| format!("a{}b", b as char)).collect();
        samples.extend(
            [
                "",
                "plain text",
                "1733580000000 seq 42",
                "ünïcødé ✓ 🙂",
                "tab\there",
                "q\"q",
                "b\\s",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for text in samples {
            let got = Data::Text(text.as_bytes()).encode().expect("text");
            let want = serde_json::to_vec(&text).expect("serde_json");
            assert_eq!(got, want, "{text:?}");
        }
        assert!(Data::Text(b"\xff").encode().is_err());
    }
}
