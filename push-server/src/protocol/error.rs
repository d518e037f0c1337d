//! The one error vocabulary of the protocol (docs/protocol.md, "Errors" and
//! the WebSocket error frames), and the typed reasons a connection ends.
//!
//! Every refusal anywhere in the server is an [`Error`]: a code from
//! [`ErrorCode`], a message for humans, maybe a `Retry-After`. It is rendered
//! once per surface: HTTP JSON ([`Error::http_body`]), WebSocket `error`
//! frames ([`Error::ws_frame`]). The end of a connection is a [`Disconnect`],
//! rendered as a WebSocket `reconnect` frame plus close code or an SSE
//! `event: reconnect`.

use std::fmt;

use axum::http::StatusCode;

use super::message::MessageId;

/// Every `code` a client can receive (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // 400
    InvalidChannel,
    TooManyChannels,
    InvalidJson,
    InvalidBody,
    BatchTooLarge,
    InvalidSince,
    InvalidLimit,
    InvalidCursor,
    InvalidQuery,
    InvalidId,
    WebsocketRequired,
    BadRequest,
    // 401
    Unauthorized,
    InvalidToken,
    TokenExpired,
    // 403
    Forbidden,
    ForbiddenOrigin,
    // 404, 405, 413, 431
    NotFound,
    MethodNotAllowed,
    MessageTooLarge,
    HeadersTooLarge,
    // 429, 503
    TooManyConnectionsFromIp,
    TooManyConnections,
    Draining,
    BrokerUnavailable,
    // WebSocket error frames only
    InvalidFrame,
    AlreadySubscribed,
    NotSubscribed,
    RateLimited,
    AckTimeout,
}

impl ErrorCode {
    /// The wire form, `snake_case`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode as C;
        match self {
            C::InvalidChannel => "invalid_channel",
            C::TooManyChannels => "too_many_channels",
            C::InvalidJson => "invalid_json",
            C::InvalidBody => "invalid_body",
            C::BatchTooLarge => "batch_too_large",
            C::InvalidSince => "invalid_since",
            C::InvalidLimit => "invalid_limit",
            C::InvalidCursor => "invalid_cursor",
            C::InvalidQuery => "invalid_query",
            C::InvalidId => "invalid_id",
            C::WebsocketRequired => "websocket_required",
            C::BadRequest => "bad_request",
            C::Unauthorized => "unauthorized",
            C::InvalidToken => "invalid_token",
            C::TokenExpired => "token_expired",
            C::Forbidden => "forbidden",
            C::ForbiddenOrigin => "forbidden_origin",
            C::NotFound => "not_found",
            C::MethodNotAllowed => "method_not_allowed",
            C::MessageTooLarge => "message_too_large",
            C::HeadersTooLarge => "headers_too_large",
            C::TooManyConnectionsFromIp => "too_many_connections_from_ip",
            C::TooManyConnections => "too_many_connections",
            C::Draining => "draining",
            C::BrokerUnavailable => "broker_unavailable",
            C::InvalidFrame => "invalid_frame",
            C::AlreadySubscribed => "already_subscribed",
            C::NotSubscribed => "not_subscribed",
            C::RateLimited => "rate_limited",
            C::AckTimeout => "ack_timeout",
        }
    }

    /// The HTTP status that goes with the code (frame-only codes map to 400).
    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::Unauthorized | C::InvalidToken | C::TokenExpired => StatusCode::UNAUTHORIZED,
            C::Forbidden | C::ForbiddenOrigin => StatusCode::FORBIDDEN,
            C::NotFound => StatusCode::NOT_FOUND,
            C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            C::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            C::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            C::TooManyConnectionsFromIp | C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            C::TooManyConnections | C::Draining | C::BrokerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    /// For humans; never parsed by clients.
    pub message: String,
    /// Seconds for a `Retry-After` header (HTTP only).
    pub retry_after: Option<u32>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u32) -> Error {
        self.retry_after = Some(secs);
        self
    }

    /// The same error with `prefix: ` before its message (a batch item).
    pub fn prefixed(mut self, prefix: impl fmt::Display) -> Error {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    /// The node is shutting down: clients should go to another node.
    pub fn draining() -> Error {
        Error::new(
            ErrorCode::Draining,
            "this node is shutting down; connect to another",
        )
        .retry_after(1)
    }

    pub fn not_found() -> Error {
        Error::new(ErrorCode::NotFound, "no such endpoint")
    }

    pub fn too_large(limit: usize) -> Error {
        Error::new(
            ErrorCode::MessageTooLarge,
            format!("message is larger than max_message_bytes ({limit} bytes)"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// `{"error":{"code":…,"message":…}}`, the body of every HTTP refusal.
    pub fn http_body(&self) -> String {
        serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}})
            .to_string()
    }

    /// `{"type":"error","code","message","channel"?,"id"?}`: a WebSocket
    /// error frame; the connection stays open.
    pub fn ws_frame(&self, channel: Option<&str>, id: Option<MessageId>) -> String {
        let mut frame = serde_json::json!({
            "type": "error",
            "code": self.code.as_str(),
            "message": self.message,
        });
        if let Some(ch) = channel {
            frame["channel"] = ch.into();
        }
        if let Some(id) = id {
            frame["id"] = id.to_string().into();
        }
        frame.to_string()
    }
}

impl From<super::message::ChannelError> for Error {
    fn from(e: super::message::ChannelError) -> Error {
        Error::new(ErrorCode::InvalidChannel, e.to_string())
    }
}

impl From<super::message::IdError> for Error {
    fn from(e: super::message::IdError) -> Error {
        Error::new(ErrorCode::InvalidId, e.to_string())
    }
}

/// Why the server ends a connection (docs/protocol.md: the `reconnect`
/// reasons and the WebSocket close codes). Every reason but the idle timeout
/// asks the client to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Nothing arrived within `idle_timeout` (WebSocket): closed, no `reconnect`.
    IdleTimeout,
    /// The node is shutting down.
    Draining,
    /// `max_connection_lifetime` reached.
    MaxLifetime,
    /// The outbound queue (or the ack pending queue) overflowed.
    SlowConsumer,
    /// The token's `exp` passed.
    TokenExpired,
    /// The broker lost messages that history no longer holds.
    BrokerGap,
}

impl Disconnect {
    /// The `reason` of the `reconnect` frame or event, if one is sent.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Disconnect::IdleTimeout => None,
            Disconnect::Draining => Some("draining"),
            Disconnect::MaxLifetime => Some("max_lifetime"),
            Disconnect::SlowConsumer => Some("slow_consumer"),
            Disconnect::TokenExpired => Some("token_expired"),
            Disconnect::BrokerGap => Some("broker_gap"),
        }
    }

    /// The WebSocket close code and reason text.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Disconnect::IdleTimeout => (1000, "idle timeout"),
            Disconnect::Draining => (1001, "draining"),
            Disconnect::MaxLifetime => (1001, "max lifetime"),
            Disconnect::TokenExpired => (1008, "token expired"),
            Disconnect::SlowConsumer => (1013, "slow_consumer"),
            Disconnect::BrokerGap => (1013, "broker_gap"),
        }
    }

    /// `{"type":"reconnect","reason":…,"retry_ms":…}`.
    pub fn ws_frame(self, retry_ms: u64) -> Option<String> {
        let reason = self.reason()?;
        Some(format!(
            "{{\"type\":\"reconnect\",\"reason\":\"{reason}\",\"retry_ms\":{retry_ms}}}"
        ))
    }

    /// `retry:` + `event: reconnect`, the last event of an SSE stream.
    pub fn sse_event(self, retry_ms: u64) -> Option<Vec<u8>> {
        let reason = self.reason()?;
        Some(
            format!(
                "retry: {retry_ms}\nevent: reconnect\ndata: {{\"reason\":\"{reason}\",\"retry_ms\":{retry_ms}}}\n\n"
            )
            .into_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_error_three_renderings() {
        let e = Error::new(ErrorCode::Forbidden, "no");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            e.http_body(),
            r#"{"error":{"code":"forbidden","message":"no"}}"#
        );
        let frame: serde_json::Value =
            serde_json::from_str(&e.ws_frame(Some("news"), Some(MessageId::new(1, 2)))).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type":"error","code":"forbidden","message":"no","channel":"news","id":"1-2"})
        );
        assert_eq!(Error::draining().retry_after, Some(1));
    }

    #[test]
    fn disconnects() {
        assert_eq!(Disconnect::IdleTimeout.ws_frame(5), None);
        assert_eq!(
            Disconnect::SlowConsumer.ws_frame(5).as_deref(),
            Some(r#"{"type":"reconnect","reason":"slow_consumer","retry_ms":5}"#)
        );
        assert_eq!(
            Disconnect::Draining.sse_event(7).as_deref(),
            Some(
                &b"retry: 7\nevent: reconnect\ndata: {\"reason\":\"draining\",\"retry_ms\":7}\n\n"
                    [..]
            )
        );
        assert_eq!(Disconnect::TokenExpired.close(), (1008, "token expired"));
    }
}
