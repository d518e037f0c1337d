//! The connection core: one connection's life, whatever its framing.
//!
//! Written once for WebSocket and SSE: subscriptions and resume, the
//! outbound queue and its batches, heartbeats, the idle timeout, the
//! lifetime, the drain, token expiry, slow consumers and acknowledged
//! delivery. A [`Transport`] supplies framing and I/O only.
//!
//! Invariant (the hot path): every await point keeps the others flowing.
//! Writes are bounded by `idle_timeout` and end early on a kick, so a client
//! that stops reading is closed instead of pinning the task; the hub never
//! waits for it (its queue is bounded and overflow is a slow consumer).
//!
//! Timers: one `Sleep` per connection, kept across iterations and moved to
//! the earliest deadline (heartbeat, idle, lifetime, drain, token expiry, ack
//! redelivery, write delay). Moving a deadline later is a store; a timer per
//! deadline would touch the timer wheel once per deadline per delivery.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::acks::{AckLimits, Acks, Overflow};
use super::gate;
use crate::auth::Principal;
use crate::config::Config;
use crate::metrics;
use crate::node::{
    ConnPermit, ConnShared, Inbound, Lane, Node, Receiver, Session, Subscribed, WRITE_BATCH,
};
use crate::protocol::frames::{self, ClientCommand, FrameError};
use crate::protocol::{Channel, Data, Disconnect, Error, ErrorCode, Message, MessageId};

/// The peer is gone (closed, reset, or stopped reading): nothing more to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer is gone")]
pub(crate) struct Gone;

/// What the client sent.
pub(crate) enum Received {
    /// A text frame (WebSocket).
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// A binary frame (WebSocket), refused with `invalid_frame`.
    Binary,
    /// Anything else that proves the client is there (Ping, Pong).
    Activity,
    /// The client closed or the socket failed.
    Gone,
}

/// Framing and I/O of one transport. Every method writes at most one batch or
/// frame; the core bounds each call in time (see [`Conn::guarded`]).
pub(crate) trait Transport: Send {
    /// The `transport` metrics label.
    const KIND: metrics::Transport;

    /// How often the transport's heartbeat is sent.
    fn heartbeat_period(config: &Config) -> Duration;

    /// How long the client may stay silent, if that matters.
    fn idle_limit(config: &Config) -> Option<Duration>;

    /// Writes `batch` (accepted, in order) in one coalesced write: the
    /// shared pre-encoded bytes of each message, never re-encoded.
    fn write_messages(
        &mut self,
        batch: &[Arc<Message>],
    ) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Writes what a lane left of `msg`: all but its first `skip` bytes.
    /// Only a transport that sets a lane ([`Core::set_lane`]) is asked.
    fn write_rest(
        &mut self,
        msg: &Arc<Message>,
        skip: usize,
    ) -> impl Future<Output = Result<(), Gone>> + Send {
        let _ = (msg, skip);
        std::future::ready(Ok(()))
    }

    /// Writes one control frame (WebSocket JSON text frames only).
    fn write_frame(&mut self, text: String) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Writes the heartbeat (WebSocket Ping, SSE `: ping`).
    fn heartbeat(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;

    /// The next thing the client sent that matters, if any. `Pending`
    /// leaves `cx`'s waker registered (state lives in the transport, not in
    /// a future): the core polls again only once it fired (`super::gate`).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received>;

    /// Says why the connection ends (best effort, briefly) and closes it.
    fn close(&mut self, why: Disconnect, retry_ms: u64) -> impl Future<Output = ()> + Send;
}

/// A connection's state without its socket: built (and, for SSE, subscribed)
/// before the response is written, then [`Core::run`] over a transport.
pub(crate) struct Core {
    node: Arc<Node>,
    session: Session,
    rx: Receiver,
    principal: Principal,
    /// Subscriptions with `ack:true`.
    acks: Acks,
    /// When the token expires (`reconnect`/`token_expired`).
    expires: Option<Instant>,
    /// Publish frames still allowed this second (`publish_rate_limit`).
    publish_budget: (u32, Instant),
    /// The batch being written, kept to reuse its allocation.
    batch: Vec<Arc<Message>>,
    /// The transport gave the fan-out a lane ([`Core::set_lane`]).
    lane: bool,
    /// Held for the life of the connection: counts it, lets the drain wait.
    _permit: ConnPermit,
}

/// Why [`Conn::serve`] stopped.
enum End {
    Gone,
    Disconnect(Disconnect),
}

impl From<Gone> for End {
    fn from(_: Gone) -> End {
        End::Gone
    }
}

impl Core {
    pub(crate) fn new(node: Arc<Node>, principal: Principal, permit: ConnPermit) -> Core {
        let (session, rx) = node.session(principal.user.clone());
        let c = &node.config;
        let acks = Acks::new(AckLimits {
            window: c.ack_window,
            timeout: c.ack_timeout,
            max_redeliveries: c.max_redeliveries,
            max_pending: c.outbound_queue,
        });
        Core {
            acks,
            expires: principal.expires_in().map(|d| Instant::now() + d),
            publish_budget: (c.publish_rate_limit, Instant::now()),
            batch: Vec::new(),
            lane: false,
            session,
            rx,
            principal,
            _permit: permit,
            node,
        }
    }

    /// What the hub sees of this connection (for a transport's lane).
    pub(crate) fn shared(&self) -> Arc<ConnShared> {
        self.session.shared.clone()
    }

    /// Unique per node, for `welcome`.
    pub(crate) fn id(&self) -> u64 {
        self.session.shared.id
    }

    /// Subscribes (or resumes after `since`), if the token grants it.
    pub(crate) async fn subscribe(
        &mut self,
        channel: Channel,
        since: Option<MessageId>,
    ) -> Result<Subscribed, Error> {
        self.node
            .subscribe(&mut self.session, &self.principal, channel, since)
            .await
    }

    /// Lets the fan-out write deliveries to the socket itself while the
    /// task waits with nothing to write and one subscription (see
    /// `node::hub`, "the lane"). `lane` must write a message's SSE event as
    /// this connection would: a stream of one channel.
    /// Not offered with a write delay, which it would skip.
    pub(crate) fn set_lane<L: Lane + 'static>(&mut self, lane: L) {
        if self.node.config.write_delay.0.is_none() {
            self.rx.set_lane(lane);
            self.lane = true;
        }
    }

    /// Counts messages written outside [`Core::run`] (the SSE backlog in
    /// the response head).
    pub(crate) fn count_delivered(&self, kind: metrics::Transport, batch: &[Arc<Message>]) {
        count_delivered(&self.node, kind, batch);
    }

    /// Serves the connection until it ends, then closes it. `channels` are
    /// subscribed first, like `subscribe` frames (WebSocket URL channels).
    ///
    /// Not an `async fn`: the state is moved into `Conn` once, here, instead
    /// of being kept beside it as the arguments of an async fn are, for the
    /// connection's whole life (hundreds of bytes per idle connection).
    pub(crate) fn run<T: Transport>(
        self,
        io: T,
        welcome: bool,
        channels: Vec<Channel>,
    ) -> impl Future<Output = ()> + Send {
        let mut conn = Conn { core: self, io };
        async move {
            // Boxed, like every rare path below: a future is as large as its
            // largest state, and the resting state (the select) is what each
            // idle connection holds.
            let end = match Box::pin(conn.start(welcome, channels)).await {
                Ok(()) => conn.serve().await,
                Err(end) => end,
            };
            if let End::Disconnect(why) = end {
                let retry = conn.core.node.retry_ms();
                Box::pin(async {
                    // Whole events only: what the lane left of one goes first.
                    if conn.claim().await.is_ok() {
                        conn.io.close(why, retry).await;
                    }
                })
                .await;
            }
        }
    }
}

fn count_delivered(node: &Node, kind: metrics::Transport, batch: &[Arc<Message>]) {
    let metrics = &node.metrics;
    metrics.transport(kind).delivered.inc_by(batch.len() as u64);
    let now = std::time::Instant::now();
    for m in batch {
        metrics
            .delivery_latency
            .observe(now.duration_since(m.accepted).as_secs_f64());
    }
}

/// The core with its transport. The socket is dropped first, the permit
/// (in `core`) last: the drain waits until the connection is really closed.
struct Conn<T> {
    io: T,
    core: Core,
}

/// Deadlines of one connection; the timer sleeps until the earliest.
struct Deadlines {
    next_heartbeat: Instant,
    /// Last time the client sent anything, when silence matters.
    last_seen: Option<Instant>,
    lifetime: Option<Instant>,
    drain: Option<Instant>,
    /// With a write delay: when the queued messages are written.
    flush: Option<Instant>,
}

impl Deadlines {
    /// The earliest of these and `others`: when the timer must fire.
    fn earliest(&self, others: [Option<Instant>; 3]) -> Instant {
        [self.lifetime, self.drain, self.flush]
            .into_iter()
            .chain(others)
            .flatten()
            .fold(self.next_heartbeat, Instant::min)
    }
}

impl<T: Transport> Conn<T> {
    /// Bounds a write by `idle_timeout`, and ends it early on a kick (a write
    /// stuck behind a full socket must not outlive a kick).
    async fn guarded(
        shared: &ConnShared,
        limit: Duration,
        write: impl Future<Output = Result<(), Gone>>,
    ) -> Result<(), Gone> {
        tokio::pin!(write);
        // Usually the socket takes it at once: then no timer is armed and no
        // kick waiter registered. (Polled once with a no-op waker; the select
        // below polls it again with the task's.)
        if let Some(r) = write.as_mut().now_or_never() {
            return r;
        }
        tokio::select! {
            biased;
            r = tokio::time::timeout(limit, write) => r.unwrap_or(Err(Gone)),
            _ = shared.kicked() => Err(Gone),
        }
    }

    /// A control frame. No claim: a transport with a lane writes none (its
    /// `write_frame` writes nothing).
    async fn frame(&mut self, text: String) -> Result<(), Gone> {
        let limit = self.core.node.config.idle_timeout;
        Self::guarded(&self.core.session.shared, limit, self.io.write_frame(text)).await
    }

    async fn error(&mut self, e: &Error, channel: Option<&str>) -> Result<(), Gone> {
        self.frame(e.ws_frame(channel, None)).await
    }

    /// Takes the lane back before the task writes anything, and writes
    /// what the lane left of a message first (see `Receiver::claim`).
    async fn claim(&mut self) -> Result<(), Gone> {
        if !self.core.lane {
            return Ok(());
        }
        match self.core.rx.claim() {
            // Boxed: rare (the socket was full), and inline it would grow
            // every connection's resting future by a write's state.
            Some((rest, skip)) => Box::pin(self.write_rest(rest, skip)).await,
            None => Ok(()),
        }
    }

    async fn write_rest(&mut self, rest: Arc<Message>, skip: usize) -> Result<(), Gone> {
        let limit = self.core.node.config.idle_timeout;
        let shared = &self.core.session.shared;
        Self::guarded(shared, limit, self.io.write_rest(&rest, skip)).await?;
        count_delivered(&self.core.node, T::KIND, std::slice::from_ref(&rest));
        Ok(())
    }

    async fn write_messages(&mut self, batch: &[Arc<Message>]) -> Result<(), Gone> {
        self.claim().await?;
        if batch.is_empty() {
            return Ok(());
        }
        let limit = self.core.node.config.idle_timeout;
        let shared = &self.core.session.shared;
        Self::guarded(shared, limit, self.io.write_messages(batch)).await?;
        count_delivered(&self.core.node, T::KIND, batch);
        Ok(())
    }

    /// `welcome`, then the URL's subscriptions.
    async fn start(&mut self, welcome: bool, channels: Vec<Channel>) -> Result<(), End> {
        if welcome {
            let heartbeat = T::heartbeat_period(&self.core.node.config).as_millis() as u64;
            self.frame(frames::welcome(self.core.id(), heartbeat))
                .await?;
        }
        for channel in channels {
            self.subscribe(channel, None, false).await?;
        }
        Ok(())
    }

    async fn serve(&mut self) -> End {
        let node = self.core.node.clone();
        let config = &node.config;
        let heartbeat = T::heartbeat_period(config);
        let idle = T::idle_limit(config);
        let mut at = Deadlines {
            next_heartbeat: Instant::now() + heartbeat,
            last_seen: idle.map(|_| Instant::now()),
            lifetime: node.lifetime_deadline(),
            drain: None,
            flush: None,
        };
        // The drain only sets a deadline.
        let drain = node.drain_started();
        tokio::pin!(drain);
        let sleep = tokio::time::sleep_until(at.next_heartbeat);
        tokio::pin!(sleep);
        // Messages win over client frames (a batch is written before the
        // socket is polled), but never more than this many times in a row.
        let mut streak = 0u8;
        let write_delay = config.write_delay.0;

        loop {
            let idle_at = at.last_seen.zip(idle).map(|(seen, idle)| seen + idle);
            let wake = at.earliest([idle_at, self.core.expires, self.core.acks.next_due()]);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            // The lane is offered while the task waits, with one
            // subscription (see `Receiver::recv`) and no acks (a lane write
            // does not go through the acks window).
            let offer = (self.core.lane && self.core.acks.is_empty()).then_some(&self.core.session);
            tokio::select! {
                biased;
                inbound = self.core.rx.recv(at.flush.is_some(), offer) => match inbound {
                    Inbound::Kicked(kick) => return End::Disconnect(kick.disconnect()),
                    Inbound::Queued => {
                        if let (Some(delay), None) = (write_delay, at.flush) {
                            at.flush = Some(Instant::now() + delay);
                            continue;
                        }
                        at.flush = None;
                        if self.deliver().await.is_err() {
                            return End::Gone;
                        }
                        streak += 1;
                        if streak == 16 {
                            // Under a steady backlog the queue is never
                            // empty: read what the client sent (acks) now.
                            streak = 0;
                            let shared = &self.core.session.shared;
                            let read = gate::recv(shared, &mut self.io);
                            if let Some(received) = read.now_or_never() {
                                if let Err(end) = self.on_received(received, &mut at).await {
                                    return end;
                                }
                            }
                        }
                    }
                },
                received = gate::recv(&self.core.session.shared, &mut self.io) => {
                    streak = 0;
                    if let Err(end) = self.on_received(received, &mut at).await {
                        return end;
                    }
                }
                () = &mut drain, if at.drain.is_none() => {
                    at.drain = Some(Instant::now() + node.drain_delay());
                }
                () = &mut sleep => {
                    if let Err(end) = Box::pin(self.on_timer(&mut at, idle_at, heartbeat)).await {
                        return end;
                    }
                }
            }
        }
    }

    /// The timer fired: whatever is due, in order of precedence.
    async fn on_timer(
        &mut self,
        at: &mut Deadlines,
        idle_at: Option<Instant>,
        heartbeat: Duration,
    ) -> Result<(), End> {
        self.claim().await?;
        let now = Instant::now();
        if at.flush.is_some_and(|f| now >= f) {
            at.flush = None;
            self.deliver().await?;
        }
        let due = |d: Option<Instant>| d.is_some_and(|d| now >= d);
        if due(idle_at) {
            return Err(End::Disconnect(Disconnect::IdleTimeout));
        }
        if due(at.lifetime) {
            return Err(End::Disconnect(Disconnect::MaxLifetime));
        }
        if due(at.drain) {
            return Err(End::Disconnect(Disconnect::Draining));
        }
        if due(self.core.expires) {
            return Err(End::Disconnect(Disconnect::TokenExpired));
        }
        if due(self.core.acks.next_due()) {
            self.redeliver(now).await?;
        }
        if now >= at.next_heartbeat {
            at.next_heartbeat = now + heartbeat;
            let limit = self.core.node.config.idle_timeout;
            Self::guarded(&self.core.session.shared, limit, self.io.heartbeat()).await?;
        }
        Ok(())
    }

    /// Writes what is queued (at most [`WRITE_BATCH`]) in one write.
    async fn deliver(&mut self) -> Result<(), Gone> {
        // Reused between batches: no allocation per write.
        let mut batch = std::mem::take(&mut self.core.batch);
        batch.clear();
        let now = Instant::now();
        let core = &mut self.core;
        let mut next = core.rx.try_recv();
        while let Some(m) = next.take() {
            if core.session.accept(&m) {
                match core.acks.offer(m, now) {
                    Ok(Some(m)) => batch.push(m),
                    Ok(None) => {}
                    Err(Overflow) => {
                        core.session.kick_slow();
                        break;
                    }
                }
            }
            if batch.len() < WRITE_BATCH {
                next = core.rx.try_recv();
            }
        }
        let result = self.write_messages(&batch).await;
        batch.clear();
        self.core.batch = batch;
        result
    }

    /// Sends due redeliveries and reports messages given up.
    async fn redeliver(&mut self, now: Instant) -> Result<(), Gone> {
        let due = self.core.acks.due(now);
        let metrics = self.core.node.metrics.clone();
        metrics.redeliveries.inc_by(due.resend.len() as u64);
        self.write_messages(&due.resend).await?;
        let max = self.core.node.config.max_redeliveries;
        for (channel, id) in due.given_up {
            let e = Error::new(
                ErrorCode::AckTimeout,
                format!("message {id} was not acknowledged after {max} redeliveries; it is not sent again"),
            );
            self.frame(e.ws_frame(Some(&channel), Some(id))).await?;
        }
        self.write_messages(&due.send).await
    }

    async fn on_received(&mut self, received: Received, at: &mut Deadlines) -> Result<(), End> {
        if let Some(seen) = at.last_seen.as_mut() {
            *seen = Instant::now();
        }
        match received {
            // Boxed: the frame handling future is large and rare; the
            // connection's resting state stays small without it.
            Received::Text(text) => Box::pin(self.on_text(&text)).await,
            Received::Binary => {
                let e = Error::new(
                    ErrorCode::InvalidFrame,
                    "binary frames are not supported: send JSON text frames",
                );
                Box::pin(self.error(&e, None)).await.map_err(End::from)
            }
            Received::Activity => Ok(()),
            Received::Gone => Err(End::Gone),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        // The task acts on a command: no lane write from here on, so that
        // what it answers (`published`, `subscribed`) keeps its place
        // before the deliveries the command causes.
        self.claim().await?;
        let command = match frames::parse(text) {
            Ok(c) => c,
            Err(FrameError { error, channel }) => {
                return Ok(self.error(&error, channel.as_deref()).await?);
            }
        };
        match command {
            ClientCommand::Ping => Ok(self.frame(frames::PONG.to_string()).await?),
            ClientCommand::Subscribe {
                channel,
                since,
                ack,
            } => self.subscribe(channel, since, ack).await,
            ClientCommand::Unsubscribe { channel } => {
                self.core.acks.remove(&channel);
                if self.core.session.unsubscribe(&channel) {
                    Ok(self.frame(frames::unsubscribed(&channel)).await?)
                } else {
                    let e = Error::new(ErrorCode::NotSubscribed, "not subscribed to this channel");
                    Ok(self.error(&e, Some(&channel)).await?)
                }
            }
            ClientCommand::Publish { channel, data } => {
                let answer = match self.publish(&channel, data).await {
                    Ok(id) => frames::published(&channel, id),
                    Err(e) => {
                        self.core.node.metrics.publish_refused(e.code);
                        e.ws_frame(Some(&channel), None)
                    }
                };
                Ok(self.frame(answer).await?)
            }
            ClientCommand::Ack { channel, id } => Ok(self.on_ack(&channel, id).await?),
        }
    }

    async fn on_ack(&mut self, channel: &str, id: Option<MessageId>) -> Result<(), Gone> {
        let invalid = |m: &str| Error::new(ErrorCode::InvalidFrame, m);
        if !self.core.acks.is_acked(channel) {
            let e = invalid("this channel has no subscription with ack:true");
            return self.error(&e, Some(channel)).await;
        }
        let Some(id) = id else {
            return self
                .error(&invalid("ack needs the message \"id\""), Some(channel))
                .await;
        };
        let (latency, send) = self.core.acks.ack(channel, id, Instant::now());
        if let Some(latency) = latency {
            let metrics = &self.core.node.metrics;
            metrics.acks.inc();
            metrics.ack_latency.observe(latency.as_secs_f64());
        }
        self.write_messages(&send).await
    }

    async fn subscribe(
        &mut self,
        channel: Channel,
        since: Option<MessageId>,
        ack: bool,
    ) -> Result<(), End> {
        let sub = match self.core.subscribe(channel.clone(), since).await {
            Ok(sub) => sub,
            Err(e) => return Ok(self.error(&e, Some(&channel)).await?),
        };
        self.frame(frames::subscribed(&channel, sub.recovered, sub.position))
            .await?;
        let mut now_sendable = Vec::with_capacity(sub.messages.len());
        if ack {
            self.core.acks.add(channel.clone());
            let now = Instant::now();
            for m in sub.messages {
                match self.core.acks.offer(m, now) {
                    Ok(Some(m)) => now_sendable.push(m),
                    Ok(None) => {}
                    Err(Overflow) => {
                        self.core.session.kick_slow();
                        break;
                    }
                }
            }
        } else {
            now_sendable = sub.messages;
        }
        Ok(self.write_messages(&now_sendable).await?)
    }

    /// A publish frame: the connection's rate limit, then the node's one
    /// publish path.
    async fn publish(
        &mut self,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) -> Result<MessageId, Error> {
        let rate = self.core.node.config.publish_rate_limit;
        if rate > 0 {
            let (left, since) = &mut self.core.publish_budget;
            if since.elapsed() >= Duration::from_secs(1) {
                *left = rate;
                *since = Instant::now();
            }
            if *left == 0 {
                return Err(Error::new(
                    ErrorCode::RateLimited,
                    format!("at most {rate} publish frames per second on one connection"),
                ));
            }
            *left -= 1;
        }
        let node = self.core.node.clone();
        node.publish(&self.core.principal, channel, Data::Json(data))
            .await
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
