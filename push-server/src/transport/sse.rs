//! The Server-Sent Events transport (SPEC §6).
//!
//! The response body is a stream that owns the connection's session and
//! queue: hyper polls it when the socket can take more, so a client that
//! stops reading stops being polled, its queue fills, and the hub marks it
//! slow; the kernel's `TCP_USER_TIMEOUT` (set on every accepted socket)
//! then ends a connection whose peer acknowledges nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use futures_util::Future;
use tokio::sync::mpsc;

use super::{cursor, parse_channels, WRITE_BATCH};
use crate::auth::bearer;
use crate::error::ApiError;
use crate::hub::{ConnShared, Session, SubscribeError};
use crate::message::{Channel, Message, MessageId};
use crate::metrics::Transport;
use crate::server::{App, ConnPermit};

/// The `retry:` sent first: how long a browser waits before reconnecting.
pub const RETRY_MS: u64 = 2000;

/// `GET /sse?channels=a,b&token=…&lastEventId=…`
pub async fn handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if app.is_draining() {
        return Err(ApiError::draining());
    }
    let channels = parse_channels(
        query.get("channels").map(String::as_str),
        app.config.max_channels_per_connection,
    )?;
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_channel",
            "channels= must name at least one channel",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.get("lastEventId").map(String::as_str))
        .filter(|s| !s.trim().is_empty());
    let since: Vec<Option<MessageId>> = match last_event_id {
        None => vec![None; channels.len()],
        Some(c) => cursor::parse(c, channels.len())
            .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let principal = app
        .auth
        .subscriber(bearer(query.get("token").map(String::as_str), &headers))?;
    if let Some(ch) = channels.iter().find(|c| !principal.may_subscribe(c)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token does not grant channel {ch:?}"),
        ));
    }
    let permit = app.admit(Transport::Sse, peer.ip())?;
    let expires = principal.expires_in().map(|d| Instant::now() + d);

    let (shared, rx) = ConnShared::new(app.config.outbound_queue, principal.user.clone());
    let mut session = Session::new(
        app.hub.clone(),
        shared.clone(),
        app.config.max_channels_per_connection,
    );
    let mut first = format!("retry: {RETRY_MS}\n\n").into_bytes();
    let mut positions = Vec::with_capacity(channels.len());
    let mut backlog = Vec::new();
    for (channel, since) in channels.iter().zip(since) {
        let sub = session
            .subscribe(channel.clone(), since)
            .await
            .map_err(|e| match e {
                SubscribeError::Broker(b) => ApiError::from(b),
                other => ApiError::bad_request("invalid_channel", other.to_string()),
            })?;
        if since.is_some() && !sub.recovered {
            first.extend_from_slice(
                format!("event: reset\ndata: {{\"channel\":\"{channel}\"}}\n\n").as_bytes(),
            );
        }
        // The cursor starts from where the client was, and moves as the
        // backlog is written below.
        positions.push(match since {
            Some(since) if sub.recovered => since,
            _ => sub.position,
        });
        backlog.extend(sub.messages);
    }
    let mut sse = Sse {
        expires,
        app: app.clone(),
        channels,
        positions,
        session,
        rx,
        shared,
        permit,
        done: false,
    };
    let delivered = sse.encode(&backlog, &mut first);
    if delivered == 0 {
        // An event with only an id sets the browser's lastEventId without
        // dispatching anything: a reconnect before the first message still
        // resumes from here.
        first.extend_from_slice(b"id: ");
        cursor::write(&sse.positions, &mut first);
        first.extend_from_slice(b"\n\n");
    }
    sse.count(&backlog);

    let body = stream::unfold(
        (sse, Some(Bytes::from(first)), None::<Timers>),
        |(mut sse, first, timers)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<_, std::convert::Infallible>(first),
                    (sse, None, timers),
                ));
            }
            let mut timers = timers.unwrap_or_else(|| Timers::new(&sse.app));
            let chunk = sse.next_chunk(&mut timers).await?;
            Some((Ok(chunk), (sse, None, Some(timers))))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The stream's state: one per SSE connection.
struct Sse {
    app: Arc<App>,
    /// The stream's channels, in `channels=` order (the cursor's order).
    channels: Vec<Channel>,
    /// Position of each channel, as written into the cursor.
    positions: Vec<MessageId>,
    session: Session,
    rx: mpsc::Receiver<Arc<Message>>,
    shared: Arc<ConnShared>,
    /// Held for the life of the stream: counts the connection.
    #[allow(dead_code)]
    permit: ConnPermit,
    /// When the token expires: the stream then ends with `token_expired`.
    expires: Option<Instant>,
    /// A final control event was written: end the stream.
    done: bool,
}

/// Timers and signals the stream waits on, created on first poll.
struct Timers {
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    lifetime: Option<Instant>,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Timers {
    fn new(app: &App) -> Timers {
        Timers {
            heartbeat: Box::pin(tokio::time::sleep(app.config.sse_heartbeat)),
            lifetime: app.lifetime_deadline(),
            drain: Box::pin(app.drain_notice()),
        }
    }
}

impl Sse {
    /// Appends `id: <cursor>` + the shared event of every message.
    fn encode(&mut self, batch: &[Arc<Message>], out: &mut Vec<u8>) -> usize {
        for m in batch {
            if let Some(i) = self.channels.iter().position(|c| *c == m.channel) {
                self.positions[i] = m.id;
            }
            out.extend_from_slice(b"id: ");
            cursor::write(&self.positions, out);
            out.push(b'\n');
            out.extend_from_slice(m.sse_event());
        }
        batch.len()
    }

    fn count(&self, batch: &[Arc<Message>]) {
        let metrics = &self.app.metrics;
        metrics.sse.delivered.inc_by(batch.len() as u64);
        let now = Instant::now();
        for m in batch {
            metrics
                .delivery_latency
                .observe(now.duration_since(m.accepted).as_secs_f64());
        }
    }

    fn control(&mut self, reason: &str) -> Bytes {
        self.done = true;
        let retry = self.app.retry_ms();
        Bytes::from(format!(
            "retry: {retry}\nevent: reconnect\ndata: {{\"reason\":\"{reason}\",\"retry_ms\":{retry}}}\n\n"
        ))
    }

    /// The next bytes to write, or `None` to end the stream.
    async fn next_chunk(&mut self, timers: &mut Timers) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let sse_heartbeat = self.app.config.sse_heartbeat;
        loop {
            let lifetime = timers.lifetime;
            let expires = self.expires;
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                kick = shared.kicked() => return Some(self.control(kick.reason())),
                msg = self.rx.recv() => {
                    let first = msg?;
                    let mut batch = Vec::with_capacity(8);
                    if self.session.accept(&first) {
                        batch.push(first);
                    }
                    while batch.len() < WRITE_BATCH {
                        match self.rx.try_recv() {
                            Ok(m) if self.session.accept(&m) => batch.push(m),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let mut out = Vec::with_capacity(batch.len() * (batch[0].sse_event().len() + 40));
                    self.encode(&batch, &mut out);
                    // Counted when handed to hyper, which writes it next.
                    self.count(&batch);
                    return Some(Bytes::from(out));
                }
                () = &mut timers.drain => return Some(self.control("draining")),
                () = sleep_until_opt(lifetime) => return Some(self.control("max_lifetime")),
                () = sleep_until_opt(expires) => return Some(self.control("token_expired")),
                () = &mut timers.heartbeat => {
                    timers.heartbeat.as_mut().reset((Instant::now() + sse_heartbeat).into());
                    return Some(Bytes::from_static(b": ping\n\n"));
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
