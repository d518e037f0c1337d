//! WebSocket client frames (docs/protocol.md, "WebSocket"), parsed into a
//! typed [`ClientCommand`], and the server frames that are not pre-encoded
//! messages.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{Error, ErrorCode};
use super::message::{validate_channel, Channel, MessageId};

/// A client frame, checked as far as it can be without a connection.
#[derive(Debug)]
pub enum ClientCommand<'a> {
    Ping,
    Subscribe {
        channel: Channel,
        since: Option<MessageId>,
        ack: bool,
    },
    /// Not validated: a channel never subscribed is `not_subscribed`.
    Unsubscribe {
        channel: String,
    },
    /// Channel and data are checked by the node's publish path.
    Publish {
        channel: String,
        data: &'a RawValue,
    },
    /// `id` is `None` when missing or not an id (checked after the channel).
    Ack {
        channel: String,
        id: Option<MessageId>,
    },
}

/// A frame that was refused: the error frame to send, and its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub error: Error,
    pub channel: Option<String>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>, channel: Option<String>) -> FrameError {
        FrameError {
            error: Error::new(code, message),
            channel,
        }
    }
}

/// Client → server frames, read field by field: `data` stays raw JSON
/// (serde's tagged enums cannot hold a `RawValue`).
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    ack: bool,
    #[serde(default, borrow)]
    data: Data<'a>,
    #[serde(default)]
    id: Option<String>,
}

/// A `data` member, `null` included.
#[derive(Default)]
struct Data<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Data(Some(raw)))
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientCommand<'_>, FrameError> {
    let frame: Raw = serde_json::from_str(text).map_err(|e| {
        FrameError::new(
            ErrorCode::InvalidFrame,
            format!("expected a JSON object with a \"type\": {e}"),
            None,
        )
    })?;
    let channel = match (frame.kind.as_str(), frame.channel) {
        ("ping", _) => return Ok(ClientCommand::Ping),
        ("subscribe" | "unsubscribe" | "publish" | "ack", Some(ch)) => ch,
        ("subscribe" | "unsubscribe" | "publish" | "ack", None) => {
            return Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "this frame needs a \"channel\"",
                None,
            ))
        }
        (other, _) => {
            return Err(FrameError::new(
                ErrorCode::InvalidFrame,
                format!("unknown frame type {other:?}"),
                None,
            ))
        }
    };
    match frame.kind.as_str() {
        "subscribe" => {
            if let Err(e) = validate_channel(&channel) {
                return Err(FrameError::new(
                    ErrorCode::InvalidChannel,
                    e.to_string(),
                    Some(channel),
                ));
            }
            let since = match frame.since.as_deref().map(str::parse::<MessageId>) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(e)) => {
                    return Err(FrameError::new(
                        ErrorCode::InvalidSince,
                        e.to_string(),
                        Some(channel),
                    ))
                }
            };
            Ok(ClientCommand::Subscribe {
                channel: channel.into(),
                since,
                ack: frame.ack,
            })
        }
        "unsubscribe" => Ok(ClientCommand::Unsubscribe { channel }),
        "publish" => match frame.data.0 {
            Some(data) => Ok(ClientCommand::Publish { channel, data }),
            None => Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "publish needs \"data\"",
                Some(channel),
            )),
        },
        _ => Ok(ClientCommand::Ack {
            channel,
            id: frame.id.as_deref().and_then(|id| id.parse().ok()),
        }),
    }
}

/// `{"type":"welcome",…}`, the first frame of every WebSocket.
pub fn welcome(connection_id: u64, heartbeat_ms: u64) -> String {
    serde_json::json!({
        "type": "welcome",
        "connection_id": connection_id.to_string(),
        "heartbeat_ms": heartbeat_ms,
    })
    .to_string()
}

/// `{"type":"subscribed",…}`.
pub fn subscribed(channel: &str, recovered: bool, position: MessageId) -> String {
    serde_json::json!({
        "type": "subscribed",
        "channel": channel,
        "recovered": recovered,
        "position": position.to_string(),
    })
    .to_string()
}

/// `{"type":"unsubscribed",…}`.
pub fn unsubscribed(channel: &str) -> String {
    serde_json::json!({"type": "unsubscribed", "channel": channel}).to_string()
}

/// `{"type":"published",…}`.
pub fn published(channel: &str, id: MessageId) -> String {
    serde_json::json!({"type": "published", "channel": channel, "id": id.to_string()}).to_string()
}

/// `{"type":"pong"}`.
pub const PONG: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (ErrorCode, Option<String>) {
        let e = parse(text).expect_err(text);
        (e.error.code, e.channel)
    }

    #[test]
    fn commands() {
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok(ClientCommand::Ping)
        ));
        match parse(r#"{"type":"subscribe","channel":"a","since":"1-2","ack":true}"#) {
            Ok(ClientCommand::Subscribe {
                channel,
                since,
                ack,
            }) => {
                assert_eq!(&*channel, "a");
                assert_eq!(since, Some(MessageId::new(1, 2)));
                assert!(ack);
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"type":"publish","channel":"a","data":{"x": 1}}"#) {
            Ok(ClientCommand::Publish { data, .. }) => assert_eq!(data.get(), r#"{"x": 1}"#),
            other => panic!("{other:?}"),
        }
        match parse(r#"{"type":"ack","channel":"a","id":"x"}"#) {
            Ok(ClientCommand::Ack { id, .. }) => assert_eq!(id, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(code("nope"), (ErrorCode::InvalidFrame, None));
        assert_eq!(code(r#"{"type":"dance"}"#), (ErrorCode::InvalidFrame, None));
        assert_eq!(
            code(r#"{"type":"subscribe"}"#),
            (ErrorCode::InvalidFrame, None)
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a b"}"#),
            (ErrorCode::InvalidChannel, Some("a b".into()))
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","since":"x"}"#),
            (ErrorCode::InvalidSince, Some("a".into()))
        );
        assert_eq!(
            code(r#"{"type":"publish","channel":"a"}"#),
            (ErrorCode::InvalidFrame, Some("a".into()))
        );
    }
}
