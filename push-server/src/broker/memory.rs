//! The in-process broker: one node, history in a ring per channel.
//!
//! Ids, history and live delivery of a channel change under one lock, so a
//! reader that registers for live delivery and then reads history sees every
//! message exactly once (the hub and connections drop ids they have seen).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{self, BoxFuture, FutureExt};

use super::{Broker, BrokerError, History, Subscribers};
use crate::protocol::message::{now_ms, Channel, Message, MessageId};

const SHARDS: usize = 64;

/// One channel's id counter and history.
struct ChannelLog {
    /// The channel's name, shared by the map's key and every message.
    channel: Channel,
    /// Newest id assigned (or the floor the log was created with).
    last: MessageId,
    /// Newest id that is no longer retained: `since` below it has a gap.
    trimmed: MessageId,
    /// Retained messages, oldest first.
    ring: VecDeque<Arc<Message>>,
    /// The hub's subscribers, while it subscribes the channel (a subscribed
    /// log is never collected).
    subscribers: Option<Arc<dyn Subscribers>>,
}

impl ChannelLog {
    /// A log created now. `floor` is the oldest id it can vouch for: a
    /// `since` below it may have missed messages of a forgotten log (or of
    /// an earlier process) and is reported as unrecoverable.
    fn new(channel: Channel, floor: MessageId) -> ChannelLog {
        ChannelLog {
            channel,
            last: MessageId::new(now_ms(), 0),
            trimmed: floor,
            ring: VecDeque::new(),
            subscribers: None,
        }
    }

    fn expire(&mut self, ttl: Duration, now: Instant) {
        while let Some(front) = self.ring.front() {
            if now.duration_since(front.accepted) < ttl {
                break;
            }
            self.trimmed = front.id;
            self.ring.pop_front();
        }
    }
}

/// The in-process broker.
pub struct MemoryBroker {
    shards: Box<[Mutex<HashMap<Channel, ChannelLog>>]>,
    /// Messages retained per channel (0: none).
    history_size: usize,
    /// Age after which a message leaves history.
    history_ttl: Duration,
    /// How long a quiet, unsubscribed, empty log is kept before the sweeper
    /// forgets it; see `floor`.
    keep: Duration,
    /// The first id of this process: nothing older is known.
    started: MessageId,
}

/// Quiet logs are kept at least this long, even without history, so a
/// client that reconnects within it to a quiet channel resumes cleanly.
const MIN_KEEP: Duration = Duration::from_secs(60);

impl MemoryBroker {
    /// Creates the broker and its history sweeper (which stops when the
    /// broker is dropped). Must be called inside a Tokio runtime.
    pub fn new(history_size: usize, history_ttl: Duration) -> Arc<MemoryBroker> {
        Self::with_keep(history_size, history_ttl, history_ttl.max(MIN_KEEP))
    }

    fn with_keep(history_size: usize, history_ttl: Duration, keep: Duration) -> Arc<MemoryBroker> {
        let (history_size, history_ttl) = if history_size == 0 || history_ttl.is_zero() {
            (0, Duration::ZERO)
        } else {
            (history_size, history_ttl)
        };
        let broker = Arc::new(MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            history_size,
            history_ttl,
            keep,
            started: MessageId::new(now_ms(), 0),
        });
        // Runs without history too: pure pub/sub still creates a log per
        // published channel, and those must not pile up.
        let basis = if history_size > 0 { history_ttl } else { keep };
        let period = (basis / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(sweep(Arc::downgrade(&broker), period));
        broker
    }

    /// The oldest `since` a log created now can vouch for. The sweeper only
    /// forgets a log whose newest id is older than `keep`, so every message
    /// of a forgotten log is older than `now - keep`; nothing before this
    /// process started is known at all.
    fn floor(&self) -> MessageId {
        let keep_ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        MessageId::new(now_ms().saturating_sub(keep_ms), 0).max(self.started)
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Channel, ChannelLog>> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % SHARDS];
        // A panic while holding the lock cannot leave a log half-updated in a
        // way that matters more than stopping delivery would; keep serving.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes synchronously: id, history and live delivery in one step.
    pub fn publish_now(&self, channel: &str, data: &[u8]) -> MessageId {
        let now = Instant::now();
        let mut shard = self.shard(channel);
        // A known channel is found by `&str`: no name is allocated per publish.
        if let Some(log) = shard.get_mut(channel) {
            return self.append(log, data, now);
        }
        let channel: Channel = channel.into();
        let log = shard
            .entry(channel.clone())
            .or_insert_with(|| ChannelLog::new(channel, self.floor()));
        self.append(log, data, now)
    }

    fn append(&self, log: &mut ChannelLog, data: &[u8], now: Instant) -> MessageId {
        let id = log.last.next_at(now_ms());
        log.last = id;
        let msg = Arc::new(Message::new(log.channel.clone(), id, data, now));
        if self.history_size > 0 {
            log.expire(self.history_ttl, now);
            if log.ring.len() == self.history_size {
                if let Some(old) = log.ring.pop_front() {
                    log.trimmed = old.id;
                }
            }
            log.ring.push_back(msg.clone());
        } else {
            log.trimmed = id;
        }
        if let Some(to) = &log.subscribers {
            to.deliver(msg);
        }
        id
    }

    /// Reads history synchronously.
    pub fn read_now(&self, channel: &Channel, since: Option<MessageId>, limit: usize) -> History {
        let now = Instant::now();
        let mut shard = self.shard(channel);
        let Some(log) = shard.get_mut(channel) else {
            // Never published or long quiet: nothing retained.
            let floor = self.floor();
            return History {
                messages: Vec::new(),
                recovered: since.is_none_or(|s| s >= floor),
                position: MessageId::new(now_ms(), 0),
            };
        };
        if self.history_size > 0 {
            log.expire(self.history_ttl, now);
        }
        let start = match since {
            Some(s) => log.ring.partition_point(|m| m.id <= s),
            None => 0,
        };
        History {
            messages: log.ring.iter().skip(start).take(limit).cloned().collect(),
            recovered: since.is_none_or(|s| s >= log.trimmed),
            position: log.last,
        }
    }

    /// Drops expired messages and forgets idle, unsubscribed channels.
    fn sweep_once(&self) {
        let now = Instant::now();
        let keep_ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        let quiet_before = MessageId::new(now_ms().saturating_sub(keep_ms), 0);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, log| {
                if self.history_size > 0 {
                    log.expire(self.history_ttl, now);
                }
                log.subscribers.is_some() || !log.ring.is_empty() || log.last >= quiet_before
            });
        }
    }
}

async fn sweep(broker: Weak<MemoryBroker>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match broker.upgrade() {
            Some(b) => b.sweep_once(),
            None => return,
        }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<MessageId, BrokerError>> {
        future::ready(Ok(self.publish_now(channel, &data))).boxed()
    }

    fn read(
        &self,
        channel: Channel,
        since: Option<MessageId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<History, BrokerError>> {
        future::ready(Ok(self.read_now(&channel, since, limit))).boxed()
    }

    fn subscribe(
        &self,
        channel: &Channel,
        to: Arc<dyn Subscribers>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut shard = self.shard(channel);
        shard
            .entry(channel.clone())
            .or_insert_with(|| ChannelLog::new(channel.clone(), self.floor()))
            .subscribers = Some(to);
        future::ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, channel: &Channel) {
        let mut shard = self.shard(channel);
        if let Some(log) = shard.get_mut(channel) {
            log.subscribers = None;
        }
    }

    fn is_up(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Arc<Message>>>);
    impl Subscribers for Collect {
        fn deliver(&self, msg: Arc<Message>) {
            self.0.lock().unwrap().push(msg);
        }
    }

    #[tokio::test]
    async fn ids_increase_and_history_is_capped() {
        let sink = Arc::new(Collect::default());
        let b = MemoryBroker::new(3, Duration::from_secs(60));
        let ch: Channel = "news".into();
        b.subscribe(&ch, sink.clone()).await.unwrap();
        let ids: Vec<_> = (0..5)
            .map(|i| b.publish_now(&ch, i.to_string().as_bytes()))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            sink.0
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            ids
        );

        let h = b.read_now(&ch, None, 10);
        assert_eq!(
            h.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids[2..]
        );
        // Every retained message shares the log's one name of its channel.
        assert!(h
            .messages
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].channel, &w[1].channel)));
        assert_eq!(h.position, ids[4]);
        let h = b.read_now(&ch, Some(ids[2]), 1);
        assert_eq!(
            h.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[3]]
        );
        assert!(h.recovered);
        assert!(
            b.read_now(&ch, Some(ids[1]), 10).recovered,
            "ids[1] trimmed, but everything after it is retained"
        );
        assert!(
            !b.read_now(&ch, Some(ids[0]), 10).recovered,
            "ids[1] is lost to a reader at ids[0]"
        );
        assert!(!b.read_now(&ch, Some(MessageId::ZERO), 10).recovered);
    }

    #[tokio::test]
    async fn ttl_expires_messages() {
        let b = MemoryBroker::new(10, Duration::from_millis(1));
        let ch: Channel = "t".into();
        let id = b.publish_now(&ch, b"1");
        std::thread::sleep(Duration::from_millis(3));
        let h = b.read_now(&ch, Some(MessageId::new(id.ms, 0).min(id)), 10);
        assert!(h.messages.is_empty());
        assert!(
            !b.read_now(&ch, Some(MessageId::new(id.ms.saturating_sub(1), 0)), 10)
                .recovered
        );
    }

    #[tokio::test]
    async fn no_history_is_pure_pubsub() {
        let sink = Arc::new(Collect::default());
        let b = MemoryBroker::new(0, Duration::from_secs(60));
        let ch: Channel = "p".into();
        b.publish_now(&ch, b"1");
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "not subscribed: not delivered"
        );
        b.subscribe(&ch, sink.clone()).await.unwrap();
        let id = b.publish_now(&ch, b"2");
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        let h = b.read_now(&ch, None, 10);
        assert!(h.messages.is_empty());
        assert_eq!(h.position, id);
        assert!(b.read_now(&ch, Some(id), 10).recovered);
    }

    #[tokio::test]
    async fn a_forgotten_quiet_log_still_resumes_and_ids_keep_rising() {
        let sink = Arc::new(Collect::default());
        let b = MemoryBroker::with_keep(10, Duration::from_millis(1), Duration::from_millis(20));
        let ch: Channel = "quiet".into();
        b.subscribe(&ch, sink.clone()).await.unwrap();
        let cursor = b.read_now(&ch, None, 10).position;
        let old = b.publish_now(&ch, b"expires");
        b.unsubscribe(&ch);
        std::thread::sleep(Duration::from_millis(30));
        b.sweep_once();
        assert!(
            b.shard(&ch).get(&ch).is_none(),
            "quiet, empty and unsubscribed past keep: forgotten"
        );
        assert!(
            !b.read_now(&ch, Some(cursor), 10).recovered,
            "the expired message is lost to a reader from before it"
        );
        assert!(
            !b.read_now(&ch, Some(old), 10).recovered,
            "a forgotten log cannot vouch for cursors older than keep"
        );
        let new = b.publish_now(&ch, b"after");
        assert!(new > old, "ids keep rising across a forgotten log");
        let h = b.read_now(&ch, Some(b.floor()), 10);
        assert!(h.recovered);
        assert_eq!(h.messages.len(), 1);
    }

    #[tokio::test]
    async fn a_quiet_log_within_keep_is_not_forgotten() {
        let sink = Arc::new(Collect::default());
        let b = MemoryBroker::new(10, Duration::from_millis(1));
        let ch: Channel = "quiet".into();
        b.subscribe(&ch, sink.clone()).await.unwrap();
        let cursor = b.read_now(&ch, None, 10).position;
        b.unsubscribe(&ch);
        std::thread::sleep(Duration::from_millis(5));
        b.sweep_once();
        b.publish_now(&ch, b"1");
        let h = b.read_now(&ch, Some(cursor), 10);
        assert!(h.recovered, "the cursor of a quiet channel resumes");
        assert_eq!(h.messages.len(), 1);
    }

    #[tokio::test]
    async fn pure_pubsub_logs_are_swept() {
        let b = MemoryBroker::with_keep(0, Duration::ZERO, Duration::from_millis(1));
        for i in 0..100 {
            b.publish_now(&format!("c{i}"), b"x");
        }
        std::thread::sleep(Duration::from_millis(5));
        b.sweep_once();
        assert_eq!(
            b.shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>(),
            0
        );
    }

    #[tokio::test]
    async fn ids_from_before_this_process_are_not_recovered() {
        let before = MessageId::new(now_ms().saturating_sub(1_000), 0);
        let b = MemoryBroker::new(10, Duration::from_secs(60));
        assert!(!b.read_now(&"fresh".into(), Some(before), 10).recovered);
    }
}
