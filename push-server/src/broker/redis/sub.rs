//! The node's pub/sub side: one dedicated RESP3 connection (per Cluster
//! node, through the cluster client) carrying every channel this node
//! subscribed, never one per client.
//!
//! Invariants:
//! - The connection's read loop is redis-rs' own task, which only pushes
//!   into an unbounded queue; the dispatcher task drains that queue and does
//!   nothing that waits (decode once, `Sink::deliver` is `try_send`), so
//!   Redis never sees this node fall behind (`client-output-buffer-limit`).
//! - Subscribe/unsubscribe requests are handled by one control task in call
//!   order; `subscribe` resolves only once Redis confirmed it, because the
//!   hub reads history right after and relies on live delivery already
//!   running.
//! - After any disconnection (Redis restart, failover, network), every
//!   channel's live messages are held back, all channels are subscribed
//!   again, history since the last delivered id is read and delivered, then
//!   the held messages: in order, and gap-free as far as history reaches.
//!   When it does not reach, the sink is told ([`Sink::gap`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture, FutureExt};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::conn::{is_connection_error, redis_err, unavailable, RESPONSE_TIMEOUT};
use super::{channel_of, parse_payload, pubsub_channel, slot, Shared};
use crate::broker::{BrokerError, Subscribers};
use crate::protocol::message::{now_ms, Channel, Message, MessageId};

/// Channels per SUBSCRIBE command when (re)subscribing many.
const BATCH: usize = 500;
/// How often an idle pub/sub connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// History reads in flight during a catch-up.
const CATCH_UP_PARALLEL: usize = 32;

enum Ctl {
    Sub(
        Channel,
        Arc<dyn Subscribers>,
        oneshot::Sender<Result<(), BrokerError>>,
    ),
    Unsub(Channel),
}

/// One subscribed channel.
struct ChanState {
    /// The channel (shared with every message built for it).
    channel: Channel,
    /// The hub's subscribers of it: where its messages go.
    to: Arc<dyn Subscribers>,
    /// Newest id delivered to the sink; before the first message, a floor
    /// just before the subscription (catch-up reads from here).
    last: MessageId,
    /// While catching up: live messages held back until history is in.
    held: Option<Vec<Arc<Message>>>,
}

type Chans = Arc<Mutex<HashMap<Channel, ChanState>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only move values: poison carries no risk.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The broker's side of the control task.
pub struct Handle {
    ctl: mpsc::UnboundedSender<Ctl>,
    up: Arc<AtomicBool>,
}

impl Handle {
    pub fn subscribe(
        &self,
        channel: &Channel,
        to: Arc<dyn Subscribers>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Sub(channel.clone(), to, tx)).is_err() {
            return future::ready(Err(unavailable("broker stopped"))).boxed();
        }
        async move {
            rx.await
                .unwrap_or_else(|_| Err(unavailable("broker stopped")))
        }
        .boxed()
    }

    pub fn unsubscribe(&self, channel: &Channel) {
        let _ = self.ctl.send(Ctl::Unsub(channel.clone()));
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

pub fn start(shared: Arc<Shared>, stop: CancellationToken) -> Handle {
    let (ctl, rx) = mpsc::unbounded_channel();
    let up = Arc::new(AtomicBool::new(false));
    let chans: Chans = Arc::default();
    tokio::spawn(control(shared, chans, rx, up.clone(), stop));
    Handle { ctl, up }
}

/// The pub/sub connection: to the master, or to every Cluster master.
enum SubConn {
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubConn {
    async fn connect(
        shared: &Shared,
        push: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<SubConn, BrokerError> {
        let target = shared.commands.target();
        if target.is_cluster() {
            target
                .connect_cluster(Some(push))
                .await
                .map(SubConn::Cluster)
        } else {
            target.connect_master(Some(push)).await.map(SubConn::Direct)
        }
    }

    /// Subscribes and waits for Redis to confirm.
    async fn subscribe(&self, channels: &[Channel]) -> Result<(), RedisError> {
        match self {
            SubConn::Direct(c) => {
                for chunk in channels.chunks(BATCH) {
                    let names: Vec<String> = chunk.iter().map(|c| pubsub_channel(c)).collect();
                    let mut c = c.clone();
                    timed(c.subscribe(names)).await?;
                }
                Ok(())
            }
            SubConn::Cluster(c) => {
                // SSUBSCRIBE takes channels of one slot per command.
                let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
                for ch in channels {
                    let name = pubsub_channel(ch);
                    by_slot.entry(slot(&name)).or_default().push(name);
                }
                let groups: Vec<Vec<String>> = by_slot.into_values().collect();
                for wave in groups.chunks(64) {
                    let calls = wave.iter().map(|names| {
                        let mut c = c.clone();
                        let names = names.clone();
                        async move { timed(c.ssubscribe(names)).await }
                    });
                    for r in future::join_all(calls).await {
                        r?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Proves the connection alive: a connection cut without a reset (a
    /// dead peer, a dropped route) would otherwise look idle forever.
    async fn ping(&self) -> Result<(), RedisError> {
        match self {
            SubConn::Direct(c) => timed(redis::cmd("PING").query_async::<()>(&mut c.clone())).await,
            // The cluster client watches its node connections itself.
            SubConn::Cluster(_) => Ok(()),
        }
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<(), RedisError> {
        let name = pubsub_channel(channel);
        match self {
            SubConn::Direct(c) => timed(c.clone().unsubscribe(name)).await,
            SubConn::Cluster(c) => timed(c.clone().sunsubscribe(name)).await,
        }
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not confirm the subscription in time",
        ))),
    }
}

/// The floor of a channel subscribed now: catch-up reads from here if no
/// message came before the outage. One second of slack covers clock skew
/// between this node and Redis (whose clock makes the ids).
fn floor_now() -> MessageId {
    MessageId::new(now_ms().saturating_sub(1000), 0)
}

async fn control(
    shared: Arc<Shared>,
    chans: Chans,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    up: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        up.store(false, Ordering::Relaxed);
        // Hold back every channel's live messages until it has caught up.
        for st in lock(&chans).values_mut() {
            st.held.get_or_insert_with(Vec::new);
        }
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = SubConn::connect(&shared, push_tx) => c,
        };
        let conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "redis pub/sub connect failed");
                if !wait_offline(backoff, &chans, &mut ctl, &stop, &e).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (dead_tx, mut dead) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(push_rx, chans.clone(), dead_tx));
        if let Err(e) = catch_up(&shared, &chans, &conn).await {
            tracing::warn!(error = %e, "redis resubscribe/catch-up failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(50);
        up.store(true, Ordering::Relaxed);
        tracing::info!("redis pub/sub connected");
        if !serve_online(&conn, &chans, &mut ctl, &mut dead, &stop).await {
            return;
        }
    }
}

/// Waits out a reconnect backoff. Requests that come meanwhile fail fast;
/// their channels are remembered and subscribed on reconnect. False: stop.
async fn wait_offline(
    backoff: Duration,
    chans: &Chans,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    stop: &CancellationToken,
    err: &BrokerError,
) -> bool {
    let wait = tokio::time::sleep(backoff);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = &mut wait => return true,
            req = ctl.recv() => match req {
                None => return false,
                Some(req) => offline(chans, req, err),
            },
        }
    }
}

/// Serves requests on a live connection, pinging it, until it fails (true:
/// reconnect) or the broker stops (false).
async fn serve_online(
    conn: &SubConn,
    chans: &Chans,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    dead: &mut mpsc::UnboundedReceiver<()>,
    stop: &CancellationToken,
) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = ping.tick() => {
                if let Err(e) = conn.ping().await {
                    tracing::warn!(error = %e, "redis pub/sub connection silent; reconnecting");
                    return true;
                }
            }
            _ = dead.recv() => {
                tracing::warn!("redis pub/sub connection lost; resubscribing");
                return true;
            }
            req = ctl.recv() => {
                let Some(req) = req else { return false };
                let mut batch = vec![req];
                while batch.len() < BATCH {
                    match ctl.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                if let Err(e) = online(chans, conn, batch).await {
                    tracing::warn!(error = %e, "redis pub/sub command failed; reconnecting");
                    return true;
                }
            }
        }
    }
}

/// A request while Redis is unreachable.
fn offline(chans: &Chans, req: Ctl, err: &BrokerError) {
    match req {
        Ctl::Sub(channel, to, reply) => {
            lock(chans)
                .entry(channel.clone())
                .and_modify(|st| st.to = to.clone())
                .or_insert_with(|| ChanState {
                    channel,
                    to,
                    last: floor_now(),
                    held: Some(Vec::new()),
                });
            let _ = reply.send(Err(err.clone()));
        }
        Ctl::Unsub(channel) => {
            lock(chans).remove(&channel);
        }
    }
}

/// Requests while connected, in order; consecutive subscribes share one
/// command. A connection-level error is returned (reconnect).
async fn online(chans: &Chans, conn: &SubConn, batch: Vec<Ctl>) -> Result<(), RedisError> {
    let mut pending: Vec<(Channel, oneshot::Sender<Result<(), BrokerError>>)> = Vec::new();
    let mut result = Ok(());
    for req in batch {
        match req {
            Ctl::Sub(channel, to, reply) => {
                lock(chans)
                    .entry(channel.clone())
                    .and_modify(|st| st.to = to.clone())
                    .or_insert_with(|| ChanState {
                        channel: channel.clone(),
                        to,
                        last: floor_now(),
                        held: None,
                    });
                pending.push((channel, reply));
            }
            Ctl::Unsub(channel) => {
                if result.is_ok() {
                    result = flush(conn, &mut pending).await;
                }
                // Removed first: the dispatcher drops anything that still
                // arrives for it.
                lock(chans).remove(&channel);
                if result.is_ok() {
                    if let Err(e) = conn.unsubscribe(&channel).await {
                        if is_connection_error(&e) {
                            result = Err(e);
                        }
                    }
                }
            }
        }
    }
    if result.is_ok() {
        result = flush(conn, &mut pending).await;
    }
    // Anything left over was not confirmed: fail it (its channel stays
    // remembered and is subscribed again on reconnect).
    for (_, reply) in pending.drain(..) {
        let _ = reply.send(Err(unavailable("redis pub/sub connection lost")));
    }
    result
}

async fn flush(
    conn: &SubConn,
    pending: &mut Vec<(Channel, oneshot::Sender<Result<(), BrokerError>>)>,
) -> Result<(), RedisError> {
    if pending.is_empty() {
        return Ok(());
    }
    let channels: Vec<Channel> = pending.iter().map(|(c, _)| c.clone()).collect();
    match conn.subscribe(&channels).await {
        Ok(()) => {
            for (_, reply) in pending.drain(..) {
                let _ = reply.send(Ok(()));
            }
            Ok(())
        }
        Err(e) => {
            let err = redis_err(e.clone());
            for (_, reply) in pending.drain(..) {
                let _ = reply.send(Err(err.clone()));
            }
            if is_connection_error(&e) {
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

/// Subscribes every channel again, then delivers what was missed from
/// history followed by the live messages held meanwhile.
async fn catch_up(shared: &Shared, chans: &Chans, conn: &SubConn) -> Result<(), BrokerError> {
    let channels: Vec<Channel> = lock(chans).keys().cloned().collect();
    conn.subscribe(&channels).await.map_err(redis_err)?;
    let mut gaps = 0usize;
    for wave in channels.chunks(CATCH_UP_PARALLEL) {
        let reads = wave.iter().map(|channel| {
            let since = lock(chans).get(channel).map(|st| st.last);
            async move {
                match since {
                    None => Ok(None), // unsubscribed meanwhile
                    Some(since) => shared
                        .read(channel, Some(since), usize::MAX)
                        .await
                        .map(|h| Some((since, h))),
                }
            }
        });
        let results = future::join_all(reads).await;
        let mut map = lock(chans);
        for (channel, result) in wave.iter().zip(results) {
            let Some((since, history)) = result? else {
                continue;
            };
            let Some(st) = map.get_mut(channel) else {
                continue;
            };
            let mut held = st.held.take().unwrap_or_default();
            held.sort_by_key(|m| m.id);
            for msg in history.messages.into_iter().chain(held) {
                if msg.id > st.last {
                    st.last = msg.id;
                    st.to.deliver(msg);
                }
            }
            if !history.recovered {
                gaps += 1;
                tracing::warn!(%channel, %since, "messages lost during the redis outage are no longer in history");
                shared.sink.gap(channel);
            }
        }
    }
    if gaps > 0 {
        tracing::warn!(gaps, "channels with unrecoverable gaps after reconnect");
    }
    Ok(())
}

/// Drains one pub/sub connection's pushes: decode once, deliver, never wait.
async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    chans: Chans,
    dead: mpsc::UnboundedSender<()>,
) {
    while let Some(push) = rx.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                let Some(name) = channel_of(name) else {
                    continue;
                };
                let Some((id, data)) = parse_payload(payload) else {
                    tracing::warn!(channel = name, "undecodable pub/sub payload dropped");
                    continue;
                };
                let mut map = lock(&chans);
                let Some(st) = map.get_mut(name) else {
                    continue; // unsubscribed
                };
                if id <= st.last {
                    continue; // already delivered by a catch-up
                }
                let msg = Arc::new(Message::new(st.channel.clone(), id, data, Instant::now()));
                match &mut st.held {
                    Some(held) => held.push(msg),
                    None => {
                        st.last = id;
                        st.to.deliver(msg);
                    }
                }
            }
            PushKind::Disconnection => {
                let _ = dead.send(());
                return;
            }
            PushKind::SUnsubscribe => {
                // Redis drops sharded subscriptions of a slot that moved to
                // another node; ours must follow it.
                let ours = match push.data.first() {
                    Some(Value::BulkString(name)) => {
                        channel_of(name).is_some_and(|c| lock(&chans).contains_key(c))
                    }
                    _ => false,
                };
                if ours {
                    let _ = dead.send(());
                    return;
                }
            }
            _ => {}
        }
    }
    let _ = dead.send(());
}
