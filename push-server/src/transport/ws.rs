//! The WebSocket transport (SPEC §5).
//!
//! One task per connection owns the socket and loops over: kicks (slow
//! consumer), client frames, its outbound queue, timers (Ping, idle,
//! lifetime) and the drain. Every await point keeps the others flowing:
//! writes are bounded by `idle_timeout`, so a client that stops reading is
//! closed instead of pinning the task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::acks::{AckLimits, Acks, Overflow};
use super::{parse_channels, WRITE_BATCH};
use crate::api::too_large;
use crate::auth::{bearer, Principal};
use crate::error::ApiError;
use crate::hub::{ConnShared, Inbound, Kick, Receiver, Session, SubscribeError};
use crate::message::{check_depth, compact_json, validate_channel, Channel, Message, MessageId};
use crate::metrics::Transport;
use crate::server::{origin_allowed, App, ConnPermit};

/// Initial tungstenite read buffer: small, because clients send little
/// (subscribe, ack, ping) and it is allocated per connection (tungstenite's
/// default is 128 KiB). A larger frame grows it as needed.
const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes; we flush after each batch anyway.
const WRITE_BUFFER: usize = 16 * 1024;

/// `GET /ws?channels=a,b&token=…`
pub async fn handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match prepare(&app, &query, &headers) {
        Err(e) => e.into_response(),
        Ok((channels, principal)) => {
            let upgrade = match upgrade {
                Ok(u) => u,
                Err(e) => {
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "websocket_required",
                        e.body_text(),
                    )
                    .into_response()
                }
            };
            let permit = match app.admit(Transport::Ws, peer.ip()) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let max = app.config.max_message_bytes + 1024;
            upgrade
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_write_buffer_size(WRITE_BUFFER + 2 * max)
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| async move {
                    // A task of its own: axum's upgrade future (and the
                    // arguments it held) is freed instead of wrapping the
                    // connection for its whole life.
                    tokio::spawn(run(app, socket, channels, principal, permit));
                })
        }
    }
}

fn prepare(
    app: &Arc<App>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Vec<Channel>, Principal), ApiError> {
    if app.is_draining() {
        return Err(ApiError::draining());
    }
    if !origin_allowed(&app.config.allowed_origins, headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this Origin is not allowed",
        ));
    }
    let channels = parse_channels(
        query.get("channels").map(String::as_str),
        app.config.max_channels_per_connection,
    )?;
    let principal = app
        .auth
        .subscriber(bearer(query.get("token").map(String::as_str), headers))?;
    Ok((channels, principal))
}

/// Client → server frames, read field by field: `data` stays raw JSON
/// (serde's tagged enums cannot hold a `RawValue`).
#[derive(Deserialize)]
struct ClientFrame<'a> {
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

/// Why the loop ended.
enum End {
    /// The peer closed, vanished or broke the protocol: nothing more to say.
    Gone,
    /// We close with a frame.
    Close(u16, &'static str),
}

struct Conn {
    app: Arc<App>,
    socket: WebSocket,
    session: Session,
    principal: Principal,
    /// Last time the client sent anything (frame or Pong).
    last_seen: Instant,
    /// Bound on every write: a client that does not read for this long is gone.
    write_timeout: Duration,
    /// Subscriptions with `ack:true`.
    acks: Acks,
    /// When the token expires (`reconnect`/`token_expired`).
    expires: Option<Instant>,
    /// Publish frames still allowed this second (`publish_rate_limit`).
    publish_budget: (u32, Instant),
    /// The batch being written, kept to reuse its allocation.
    batch: Vec<Arc<Message>>,
}
/// The connection's future. Built synchronously so that the arguments are
/// moved into `Conn` once, not kept beside it (an async fn keeps its
/// arguments for its whole life: hundreds of bytes per idle connection).
fn run(
    app: Arc<App>,
    socket: WebSocket,
    channels: Vec<Channel>,
    principal: Principal,
    permit: ConnPermit,
) -> impl std::future::Future<Output = ()> + Send {
    let (shared, rx) = ConnShared::new(app.config.outbound_queue, principal.user.clone());
    let session = Session::new(
        app.hub.clone(),
        shared.clone(),
        app.config.max_channels_per_connection,
    );
    let c = &app.config;
    let acks = Acks::new(AckLimits {
        window: c.ack_window,
        timeout: c.ack_timeout,
        max_redeliveries: c.max_redeliveries,
        max_pending: c.outbound_queue,
    });
    let mut conn = Conn {
        write_timeout: c.idle_timeout,
        acks,
        expires: principal.expires_in().map(|d| Instant::now() + d),
        publish_budget: (c.publish_rate_limit, Instant::now()),
        batch: Vec::new(),
        app,
        socket,
        session,
        principal,
        last_seen: Instant::now(),
    };
    async move {
        let end = conn.serve(shared.id, rx, channels).await;
        if let End::Close(code, reason) = end {
            Box::pin(conn.close(code, reason)).await;
        }
        drop(conn);
        drop(permit);
    }
}

impl Conn {
    async fn serve(&mut self, id: u64, rx: Receiver, channels: Vec<Channel>) -> End {
        // Boxed, like every rare path below: a future is as large as its
        // largest state, and the resting state (the select) is what each
        // idle connection holds.
        if let Err(end) = Box::pin(self.start(id, channels)).await {
            return end;
        }

        let heartbeat = self.app.config.heartbeat;
        let idle = self.app.config.idle_timeout;
        let mut next_ping = Instant::now() + heartbeat;
        let lifetime = self.app.lifetime_deadline();
        // The drain only sets a deadline.
        let drain_token = self.app.drain_token();
        let drain = drain_token.cancelled();
        tokio::pin!(drain);
        let mut drain_at: Option<Instant> = None;
        // One timer for everything, kept across iterations: moving its
        // deadline later is a store, recreating it would touch the timer
        // wheel twice per delivery.
        let sleep = tokio::time::sleep_until(next_ping.into());
        tokio::pin!(sleep);
        // Messages win over client frames (a batch is written before the
        // socket is polled), but never more than this many times in a row.
        let mut streak = 0u8;
        // With a write delay: when the queued messages are written.
        let write_delay = self.app.config.write_delay.0;
        let mut flush_at: Option<Instant> = None;

        loop {
            let idle_at = self.last_seen + idle;
            let wake = [
                Some(next_ping),
                Some(idle_at),
                lifetime,
                drain_at,
                self.expires,
                self.acks.next_due(),
                flush_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(idle_at);
            if sleep.deadline() != wake.into() {
                sleep.as_mut().reset(wake.into());
            }
            tokio::select! {
                biased;
                inbound = rx.recv(flush_at.is_some()) => match inbound {
                    Inbound::Kicked(kick) => {
                        Box::pin(self.reconnect(kick.reason())).await;
                        return End::Close(1013, kick.reason());
                    }
                    Inbound::Queued => {
                        if let (Some(delay), None) = (write_delay, flush_at) {
                            flush_at = Some(Instant::now() + delay);
                            continue;
                        }
                        flush_at = None;
                        if self.deliver(&rx).await.is_err() {
                            return End::Gone;
                        }
                        streak += 1;
                        if streak == 16 {
                            // Under a steady backlog the queue is never
                            // empty: read what the client sent (acks) now.
                            streak = 0;
                            if let Some(frame) = self.socket.recv().now_or_never() {
                                if let Err(end) = self.on_frame(frame).await {
                                    return end;
                                }
                            }
                        }
                    }
                },
                frame = self.socket.recv() => {
                    streak = 0;
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
                () = &mut drain, if drain_at.is_none() => {
                    drain_at = Some(Instant::now() + self.app.drain_delay());
                }
                () = &mut sleep => {
                    let now = Instant::now();
                    if flush_at.is_some_and(|f| now >= f) {
                        flush_at = None;
                        if self.deliver(&rx).await.is_err() {
                            return End::Gone;
                        }
                    }
                    if now >= idle_at {
                        return End::Close(1000, "idle timeout");
                    }
                    if lifetime.is_some_and(|l| now >= l) {
                        Box::pin(self.reconnect("max_lifetime")).await;
                        return End::Close(1001, "max lifetime");
                    }
                    if drain_at.is_some_and(|d| now >= d) {
                        Box::pin(self.reconnect("draining")).await;
                        return End::Close(1001, "draining");
                    }
                    if self.expires.is_some_and(|e| now >= e) {
                        Box::pin(self.reconnect("token_expired")).await;
                        return End::Close(1008, "token expired");
                    }
                    if self.acks.next_due().is_some_and(|d| now >= d) && Box::pin(self.redeliver(now)).await.is_err() {
                        return End::Gone;
                    }
                    if now >= next_ping {
                        next_ping = now + heartbeat;
                        if Box::pin(self.write(WsMessage::Ping(Default::default()))).await.is_err() {
                            return End::Gone;
                        }
                    }
                }
            }
        }
    }

    /// Handles one frame from the client (`None`: the stream ended).
    async fn on_frame(&mut self, frame: Option<Result<WsMessage, axum::Error>>) -> Result<(), End> {
        let Some(Ok(frame)) = frame else {
            return Err(End::Gone);
        };
        self.last_seen = Instant::now();
        match frame {
            // Boxed: the frame handling future is large and rare; the
            // connection's resting state stays small without it.
            WsMessage::Text(text) => Box::pin(self.on_text(&text)).await,
            WsMessage::Binary(_) => Box::pin(self.error(
                "invalid_frame",
                "binary frames are not supported: send JSON text frames",
                None,
            ))
            .await
            .map_err(|()| End::Gone),
            WsMessage::Close(_) => Err(End::Gone),
            // tungstenite answers Pings itself; both count as activity.
            WsMessage::Ping(_) | WsMessage::Pong(_) => Ok(()),
        }
    }

    /// `welcome`, then the URL's subscriptions.
    async fn start(&mut self, id: u64, channels: Vec<Channel>) -> Result<(), End> {
        let welcome = json!({
            "type": "welcome",
            "connection_id": id.to_string(),
            "heartbeat_ms": self.app.config.heartbeat.as_millis() as u64,
        });
        self.send_json(welcome).await.map_err(|()| End::Gone)?;
        for channel in channels {
            self.subscribe(channel, None, false).await?;
        }
        Ok(())
    }

    /// Writes `first` and whatever else is already queued, in one flush.
    async fn deliver(&mut self, rx: &Receiver) -> Result<(), ()> {
        // Reused between batches: no allocation per write.
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let now = Instant::now();
        let mut next = rx.try_recv();
        while let Some(m) = next.take() {
            if self.session.accept(&m) {
                match self.acks.offer(m, now) {
                    Ok(Some(m)) => batch.push(m),
                    Ok(None) => {}
                    Err(Overflow) => {
                        self.app.metrics.slow_consumer_disconnects.inc();
                        self.session.shared.kick(Kick::SlowConsumer);
                        break;
                    }
                }
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv();
            }
        }
        let result = self.write_messages(&batch).await;
        batch.clear();
        self.batch = batch;
        result
    }

    /// Sends due redeliveries and reports messages given up.
    async fn redeliver(&mut self, now: Instant) -> Result<(), ()> {
        let due = self.acks.due(now);
        self.app
            .metrics
            .redeliveries
            .inc_by(due.resend.len() as u64);
        self.write_messages(&due.resend).await?;
        let max = self.app.config.max_redeliveries;
        for (channel, id) in due.given_up {
            let frame = json!({
                "type": "error",
                "code": "ack_timeout",
                "message": format!("message {id} was not acknowledged after {max} redeliveries; it is not sent again"),
                "channel": &*channel,
                "id": id.to_string(),
            });
            self.send_json(frame).await?;
        }
        self.write_messages(&due.send).await
    }
    async fn write_messages(&mut self, batch: &[Arc<Message>]) -> Result<(), ()> {
        if batch.is_empty() {
            return Ok(());
        }
        let socket = &mut self.socket;
        let write = async {
            for m in batch {
                socket.feed(WsMessage::Text(m.ws_frame().clone())).await?;
            }
            socket.flush().await
        };
        tokio::pin!(write);
        // Usually the socket takes the batch at once: then no timer is armed
        // and no kick waiter registered. (Polled once with a no-op waker;
        // the select below polls it again with the task's.)
        let written = match write.as_mut().now_or_never() {
            Some(r) => r.is_ok(),
            None => {
                let shared = &self.session.shared;
                tokio::select! {
                    biased;
                    r = tokio::time::timeout(self.write_timeout, write) => matches!(r, Ok(Ok(()))),
                    // A write stuck behind a full socket must not outlive a kick.
                    _ = shared.kicked() => false,
                }
            }
        };
        match written {
            true => {
                let metrics = &self.app.metrics;
                metrics.ws.delivered.inc_by(batch.len() as u64);
                let now = Instant::now();
                for m in batch {
                    metrics
                        .delivery_latency
                        .observe(now.duration_since(m.accepted).as_secs_f64());
                }
                Ok(())
            }
            false => Err(()),
        }
    }

    async fn write(&mut self, msg: WsMessage) -> Result<(), ()> {
        match tokio::time::timeout(self.write_timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn send_json(&mut self, value: serde_json::Value) -> Result<(), ()> {
        self.write(WsMessage::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn error(&mut self, code: &str, message: &str, channel: Option<&str>) -> Result<(), ()> {
        let mut frame = json!({"type": "error", "code": code, "message": message});
        if let Some(ch) = channel {
            frame["channel"] = json!(ch);
        }
        self.send_json(frame).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.send(frame)).await;
    }

    async fn reconnect(&mut self, reason: &str) {
        let frame = json!({"type": "reconnect", "reason": reason, "retry_ms": self.app.retry_ms()});
        // Best effort and short: a slow consumer may not read it at all.
        let write = self
            .socket
            .send(WsMessage::Text(Utf8Bytes::from(frame.to_string())));
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let gone = |_| End::Gone;
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let message = format!("expected a JSON object with a \"type\": {e}");
                return self
                    .error("invalid_frame", &message, None)
                    .await
                    .map_err(gone);
            }
        };
        let channel = match (frame.kind.as_str(), frame.channel) {
            ("ping", _) => return self.send_json(json!({"type": "pong"})).await.map_err(gone),
            ("subscribe" | "unsubscribe" | "publish" | "ack", Some(ch)) => ch,
            ("subscribe" | "unsubscribe" | "publish" | "ack", None) => {
                return self
                    .error("invalid_frame", "this frame needs a \"channel\"", None)
                    .await
                    .map_err(gone)
            }
            (other, _) => {
                let message = format!("unknown frame type {other:?}");
                return self
                    .error("invalid_frame", &message, None)
                    .await
                    .map_err(gone);
            }
        };
        match frame.kind.as_str() {
            "subscribe" => {
                if let Err(e) = validate_channel(&channel) {
                    return self
                        .error("invalid_channel", &e.to_string(), Some(&channel))
                        .await
                        .map_err(gone);
                }
                let since = match frame.since.as_deref().map(str::parse::<MessageId>) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(e)) => {
                        return self
                            .error("invalid_since", &e.to_string(), Some(&channel))
                            .await
                            .map_err(gone)
                    }
                };
                self.subscribe(channel.into(), since, frame.ack).await
            }
            "unsubscribe" => {
                self.acks.remove(&channel);
                if self.session.unsubscribe(&channel) {
                    self.send_json(json!({"type": "unsubscribed", "channel": channel}))
                        .await
                        .map_err(gone)
                } else {
                    self.error(
                        "not_subscribed",
                        "not subscribed to this channel",
                        Some(&channel),
                    )
                    .await
                    .map_err(gone)
                }
            }
            "publish" => match frame.data.0 {
                Some(data) => self.publish(channel, data).await.map_err(gone),
                None => self
                    .error("invalid_frame", "publish needs \"data\"", Some(&channel))
                    .await
                    .map_err(gone),
            },
            _ => self
                .on_ack(&channel, frame.id.as_deref())
                .await
                .map_err(gone),
        }
    }

    async fn on_ack(&mut self, channel: &str, id: Option<&str>) -> Result<(), ()> {
        if !self.acks.is_acked(channel) {
            return self
                .error(
                    "invalid_frame",
                    "this channel has no subscription with ack:true",
                    Some(channel),
                )
                .await;
        }
        let Some(Ok(id)) = id.map(str::parse::<MessageId>) else {
            return self
                .error(
                    "invalid_frame",
                    "ack needs the message \"id\"",
                    Some(channel),
                )
                .await;
        };
        let (latency, send) = self.acks.ack(channel, id, Instant::now());
        if let Some(latency) = latency {
            self.app.metrics.acks.inc();
            self.app.metrics.ack_latency.observe(latency.as_secs_f64());
        }
        self.write_messages(&send).await
    }

    async fn subscribe(
        &mut self,
        channel: Channel,
        since: Option<MessageId>,
        ack: bool,
    ) -> Result<(), End> {
        let gone = |_| End::Gone;
        if !self.principal.may_subscribe(&channel) {
            return self
                .error(
                    "forbidden",
                    "the token does not grant this channel",
                    Some(&channel),
                )
                .await
                .map_err(gone);
        }
        match self.session.subscribe(channel.clone(), since).await {
            Ok(sub) => {
                let frame = json!({
                    "type": "subscribed",
                    "channel": &*channel,
                    "recovered": sub.recovered,
                    "position": sub.position.to_string(),
                });
                self.send_json(frame).await.map_err(gone)?;
                let mut now_sendable = Vec::with_capacity(sub.messages.len());
                if ack {
                    self.acks.add(channel.clone());
                    let now = Instant::now();
                    for m in sub.messages {
                        match self.acks.offer(m, now) {
                            Ok(Some(m)) => now_sendable.push(m),
                            Ok(None) => {}
                            Err(Overflow) => {
                                self.session.shared.kick(Kick::SlowConsumer);
                                break;
                            }
                        }
                    }
                } else {
                    now_sendable = sub.messages;
                }
                self.write_messages(&now_sendable).await.map_err(gone)
            }
            Err(e) => {
                let code = match e {
                    SubscribeError::AlreadySubscribed => "already_subscribed",
                    SubscribeError::TooManyChannels(_) => "too_many_channels",
                    SubscribeError::Broker(_) => "broker_unavailable",
                };
                self.error(code, &e.to_string(), Some(&channel))
                    .await
                    .map_err(gone)
            }
        }
    }

    async fn publish(&mut self, channel: String, data: &RawValue) -> Result<(), ()> {
        if let Err(e) = self.app.check_publish_allowed() {
            return self.error(e.code, &e.message, Some(&channel)).await;
        }
        if let Err(e) = validate_channel(&channel) {
            return self
                .error("invalid_channel", &e.to_string(), Some(&channel))
                .await;
        }
        if !self.principal.may_publish(&channel) {
            return self
                .error(
                    "forbidden",
                    "the token does not allow publishing here",
                    Some(&channel),
                )
                .await;
        }
        let rate = self.app.config.publish_rate_limit;
        if rate > 0 {
            let (left, since) = &mut self.publish_budget;
            if since.elapsed() >= Duration::from_secs(1) {
                *left = rate;
                *since = Instant::now();
            }
            if *left == 0 {
                let message = format!("at most {rate} publish frames per second on one connection");
                return self.error("rate_limited", &message, Some(&channel)).await;
            }
            *left -= 1;
        }
        let limit = self.app.config.max_message_bytes;
        if data.get().len() > limit {
            return self
                .error(
                    "message_too_large",
                    &too_large(limit).message,
                    Some(&channel),
                )
                .await;
        }
        if let Err(message) = check_depth(data.get().as_bytes()) {
            return self.error("invalid_json", &message, Some(&channel)).await;
        }
        let data = compact_json(data.get().as_bytes());
        match self
            .app
            .hub
            .broker
            .publish(channel.as_str().into(), data.into())
            .await
        {
            Ok(id) => {
                self.app.metrics.published.inc();
                self.send_json(
                    json!({"type": "published", "channel": channel, "id": id.to_string()}),
                )
                .await
            }
            Err(e) => {
                self.error("broker_unavailable", &e.to_string(), Some(&channel))
                    .await
            }
        }
    }
}

/// A text frame decoded as [`Conn::on_text`] decodes it, without a
/// connection: the entry point of the `ws_text_frame` fuzz target
/// (`crate::fuzzing`).
pub(crate) fn decode_for_fuzzing(text: &str) -> Option<crate::fuzzing::DecodedFrame> {
    let f: ClientFrame = serde_json::from_str(text).ok()?;
    Some(crate::fuzzing::DecodedFrame {
        kind: f.kind,
        channel: f.channel,
        since: f.since,
        ack: f.ack,
        data: f.data.0.map(|d| d.get().to_string()),
        id: f.id,
    })
}
