//! The HTTP API: publish (one and batch), history, presence.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::message::{check_depth, compact_json, validate_channel, Channel, MessageId};
use crate::server::App;

/// Most messages in one batch publish.
pub const MAX_BATCH: usize = 1000;
/// History page size when `limit` is not given, and the largest allowed.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 10_000;

fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn channel_from(path: Result<Path<String>, PathRejection>) -> Result<Channel, ApiError> {
    let Path(channel) =
        path.map_err(|e| ApiError::bad_request("invalid_channel", e.body_text()))?;
    validate_channel(&channel)?;
    Ok(channel.into())
}

fn body_from(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    match body {
        Ok(b) => Ok(b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large(limit)),
        Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
    }
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "message_too_large",
        format!("message is larger than max_message_bytes ({limit} bytes)"),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a publish body into the message's `data` JSON: the JSON value as
/// given (whitespace removed) for JSON bodies, else the body as a string.
pub fn encode_data(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if is_json(headers) {
        serde_json::from_slice::<&RawValue>(body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
        })?;
        check_depth(body).map_err(|m| ApiError::bad_request("invalid_json", m))?;
        Ok(compact_json(body))
    } else {
        let text = std::str::from_utf8(body).map_err(|_| {
            ApiError::bad_request("invalid_body", "a text body must be valid UTF-8")
        })?;
        serde_json::to_vec(text).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
    }
}

/// `{"channel":…,"id":…}` without a JSON tree: channel names need no escaping.
fn published_json(channel: &str, id: MessageId) -> String {
    format!("{{\"channel\":\"{channel}\",\"id\":\"{id}\"}}")
}

/// `POST /api/v1/channels/{channel}/messages`
pub async fn publish_one(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let channel = channel_from(path)?;
    let publisher = app.auth.publisher(&headers)?;
    app.check_publish_allowed()?;
    let limit = app.config.max_message_bytes;
    let body = body_from(body, limit)?;
    if body.len() > limit {
        return Err(too_large(limit));
    }
    if !publisher.may_publish(&channel) {
        return Err(forbidden(&channel, "publish to"));
    }
    let data = encode_data(&headers, &body)?;
    let id = app.hub.broker.publish(channel.clone(), data.into()).await?;
    app.metrics.published.inc();
    Ok(json(StatusCode::OK, published_json(&channel, id)))
}

fn forbidden(channel: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("not allowed to {what} channel {channel:?}"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    messages: Vec<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    channel: String,
    data: Box<RawValue>,
}

/// `POST /api/v1/publish`: every message is validated before any is
/// published, so a bad batch publishes nothing.
pub async fn publish_batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let publisher = app.auth.publisher(&headers)?;
    app.check_publish_allowed()?;
    let limit = app.config.max_message_bytes;
    let body = body_from(body, (16 * limit).max(1 << 20))?;
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("body must be {{\"messages\":[{{\"channel\",\"data\"}}…]}}: {e}"),
        )
    })?;
    if batch.messages.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {MAX_BATCH} messages per batch"),
        ));
    }
    let mut ready = Vec::with_capacity(batch.messages.len());
    for (i, item) in batch.messages.iter().enumerate() {
        validate_channel(&item.channel)
            .map_err(|e| ApiError::bad_request("invalid_channel", format!("messages[{i}]: {e}")))?;
        let data = item.data.get().as_bytes();
        if data.len() > limit {
            return Err(ApiError {
                message: format!("messages[{i}]: {}", too_large(limit).message),
                ..too_large(limit)
            });
        }
        check_depth(data)
            .map_err(|m| ApiError::bad_request("invalid_json", format!("messages[{i}]: {m}")))?;
        if !publisher.may_publish(&item.channel) {
            return Err(forbidden(&item.channel, "publish to"));
        }
        ready.push((Channel::from(item.channel.as_str()), compact_json(data)));
    }
    let total = ready.len();
    let mut results = Vec::with_capacity(total);
    for (done, (channel, data)) in ready.into_iter().enumerate() {
        match app.hub.broker.publish(channel.clone(), data.into()).await {
            Ok(id) => {
                app.metrics.published.inc();
                results.push(serde_json::json!({"channel": &*channel, "id": id.to_string()}));
            }
            Err(e) => {
                let mut err = ApiError::from(e);
                err.message = format!(
                    "{} ({done} of {total} messages were published)",
                    err.message
                );
                return Err(err);
            }
        }
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "results": results }).to_string(),
    ))
}

/// `GET /api/v1/channels/{channel}/messages?since=<id>&limit=<n>`
pub async fn history(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channel = channel_from(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let since = match query.get("since").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<MessageId>()
                .map_err(|e| ApiError::bad_request("invalid_since", e.to_string()))?,
        ),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l <= MAX_HISTORY_LIMIT)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a number from 0 to {MAX_HISTORY_LIMIT}"),
                )
            })?,
    };
    let reader = app
        .auth
        .reader(query.get("token").map(String::as_str), &headers)?;
    if !reader.may_subscribe(&channel) {
        return Err(forbidden(&channel, "read"));
    }
    let page = app.hub.broker.read(channel, since, limit).await?;
    // The envelopes are already encoded: splice them, don't re-serialize.
    let mut out = Vec::with_capacity(
        64 + page
            .messages
            .iter()
            .map(|m| m.envelope().len() + 1)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&m.envelope());
    }
    out.extend_from_slice(
        format!(
            "],\"recovered\":{},\"position\":\"{}\"}}",
            page.recovered, page.position
        )
        .as_bytes(),
    );
    Ok(json(StatusCode::OK, out))
}

/// `GET /api/v1/channels/{channel}/presence`
pub async fn presence(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channel = channel_from(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let reader = app
        .auth
        .reader(query.get("token").map(String::as_str), &headers)?;
    if !reader.may_subscribe(&channel) {
        return Err(forbidden(&channel, "read"));
    }
    // With Redis, every live node's count; alone, this node's.
    let (connections, users) = match app.hub.broker.presence(channel.clone()).await? {
        Some(p) => (p.connections, p.users),
        None => {
            let (connections, users) = app.hub.presence(&channel);
            (connections, users.iter().map(|u| u.to_string()).collect())
        }
    };
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"channel": &*channel, "connections": connections, "users": users})
            .to_string(),
    ))
}
