//! The HTTP API (docs/protocol.md, "HTTP API"): publish (one and batch),
//! history, presence. Each handler reads the request, authenticates, and
//! calls the node; the node decides.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::AppState;
use crate::protocol::message::validate_channel;
use crate::protocol::{Channel, Data, Error, ErrorCode, MessageId};

/// Most messages in one batch publish.
const MAX_BATCH: usize = 1000;
/// History page size when `limit` is not given, and the largest allowed.
const DEFAULT_HISTORY_LIMIT: usize = 100;
const MAX_HISTORY_LIMIT: usize = 10_000;

/// Body limit of a batch: `max(1 MiB, 16 × max_message_bytes)`.
fn batch_limit(max_message_bytes: usize) -> usize {
    (16 * max_message_bytes).max(1 << 20)
}

fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn channel_from(path: Result<Path<String>, PathRejection>) -> Result<Channel, Error> {
    let Path(channel) = path.map_err(|e| Error::new(ErrorCode::InvalidChannel, e.body_text()))?;
    validate_channel(&channel)?;
    Ok(channel.into())
}

/// Reads a body of at most `limit` bytes, after the request was authorized:
/// a refused request is answered without reading it (see `http::body`),
/// and an announced length above the limit is refused before reading.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(Error::too_large(limit));
    }
    let invalid = |e: axum::Error| Error::new(ErrorCode::InvalidBody, e.to_string());
    let mut chunks = body.into_data_stream();
    // Most bodies are one chunk: kept as is, not copied.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(invalid)?;
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if have + chunk.len() > limit {
            return Err(Error::too_large(limit));
        }
        match &first {
            None => first = Some(chunk),
            Some(_) => rest.extend_from_slice(&chunk),
        }
    }
    let first = first.unwrap_or_default();
    if rest.is_empty() {
        return Ok(first);
    }
    let mut all = BytesMut::with_capacity(first.len() + rest.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&rest);
    Ok(all.freeze())
}

fn query_from(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Error> {
    let Query(query) = query.map_err(|e| Error::new(ErrorCode::InvalidQuery, e.body_text()))?;
    Ok(query)
}

/// `application/json` or `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    is_json_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// [`is_json`] of a `Content-Type` value (the raw publish path's).
pub(super) fn is_json_type(ct: Option<&str>) -> bool {
    let Some(ct) = ct else {
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

/// `{"channel":…,"id":…}` without a JSON tree: channel names need no escaping.
pub(super) fn published_json(channel: &str, id: MessageId) -> Vec<u8> {
    let mut out = Vec::with_capacity(published_json_len(channel, id));
    put_published_json(&mut out, channel, id);
    out
}

/// [`published_json`] appended to `out` (the raw publish path's answers).
pub(super) fn put_published_json(out: &mut Vec<u8>, channel: &str, id: MessageId) {
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    id.put_text(out);
    out.extend_from_slice(b"\"}");
}

/// The length of [`published_json`], before it is written.
pub(super) fn published_json_len(channel: &str, id: MessageId) -> usize {
    r#"{"channel":"","id":""}"#.len() + channel.len() + id.text_len()
}

/// `POST /api/v1/channels/{channel}/messages`
pub(super) async fn publish_one(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let answer = publish_one_checked(&state, path, headers, body).await;
    counted(&state, answer)
}

/// Counts a refused publish (`push_publish_errors`) on its way out.
fn counted(state: &AppState, answer: Result<Response, Error>) -> Result<Response, Error> {
    if let Err(e) = &answer {
        state.node.metrics.publish_refused(e.code);
    }
    answer
}

async fn publish_one_checked(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let node = &state.node;
    let channel = channel_from(path)?;
    let publisher = node.publisher(&headers)?;
    let body = read_body(body, &headers, node.config.max_message_bytes).await?;
    let data = if is_json(&headers) {
        Data::JsonBody(&body)
    } else {
        Data::Text(&body)
    };
    let id = node.publish(&publisher, &channel, data).await?;
    Ok(json(StatusCode::OK, published_json(&channel, id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    messages: Vec<BatchItem<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /api/v1/publish`: every message is checked before any is
/// published, so a bad batch publishes nothing.
pub(super) async fn publish_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let answer = publish_batch_checked(&state, headers, body).await;
    counted(&state, answer)
}

async fn publish_batch_checked(
    state: &AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let node = &state.node;
    let publisher = node.publisher(&headers)?;
    let body = read_body(body, &headers, batch_limit(node.config.max_message_bytes)).await?;
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            ErrorCode::InvalidJson,
            format!("body must be {{\"messages\":[{{\"channel\",\"data\"}}…]}}: {e}"),
        )
    })?;
    if batch.messages.len() > MAX_BATCH {
        return Err(Error::new(
            ErrorCode::BatchTooLarge,
            format!("at most {MAX_BATCH} messages per batch"),
        ));
    }
    let items: Vec<(&str, Data)> = batch
        .messages
        .iter()
        .map(|m| (m.channel.as_str(), Data::Json(m.data)))
        .collect();
    let published = node.publish_batch(&publisher, &items).await?;
    let results: Vec<_> = published
        .iter()
        .map(|(channel, id)| serde_json::json!({"channel": &**channel, "id": id.to_string()}))
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "results": results }).to_string(),
    ))
}

/// `GET /api/v1/channels/{channel}/messages?since=<id>&limit=<n>`
pub(super) async fn history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let channel = channel_from(path)?;
    let query = query_from(query)?;
    let since = match query.get("since").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<MessageId>()
                .map_err(|e| Error::new(ErrorCode::InvalidSince, e.to_string()))?,
        ),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l <= MAX_HISTORY_LIMIT)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidLimit,
                    format!("limit must be a number from 0 to {MAX_HISTORY_LIMIT}"),
                )
            })?,
    };
    let node = &state.node;
    let reader = node.reader(query.get("token").map(String::as_str), &headers)?;
    let page = node.history(&reader, channel, since, limit).await?;
    // The envelopes are already encoded: splice them, don't re-serialize.
    let mut out = Vec::with_capacity(
        64 + page
            .messages
            .iter()
            .map(|m| m.envelope_len() + 1)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        m.put_envelope(&mut out);
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
pub(super) async fn presence(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let channel = channel_from(path)?;
    let query = query_from(query)?;
    let node = &state.node;
    let reader = node.reader(query.get("token").map(String::as_str), &headers)?;
    let (connections, users) = node.presence(&reader, channel.clone()).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"channel": &*channel, "connections": connections, "users": users})
            .to_string(),
    ))
}
