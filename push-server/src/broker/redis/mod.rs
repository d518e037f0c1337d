//! The Redis broker: many nodes share channels, ids and history through
//! Redis (one URL, a Sentinel-managed master, or a Cluster with sharded
//! pub/sub). See `docs/brokers.md` for the guarantees and failure behaviour.
//!
//! Keys (the `{channel}` hash tag keeps a channel's stream, presence hash and
//! pub/sub channel on one Cluster slot, so the publish script may touch all):
//! - `push:{<channel>}:h`: the history stream; its ids are the message ids.
//! - `push:{<channel>}`: the (sharded) pub/sub channel; payload `<id> <data>`.
//! - `push:{<channel>}:p`: presence hash, field per node (see [`presence`]).
//!
//! Publish is one Lua script: trim by size and age (recording the newest
//! trimmed id as the stream's `max-deleted-entry-id`, so readers learn of
//! gaps), `XADD`, `PEXPIRE`, then `(S)PUBLISH` of the id and data — so every
//! node sees the same id, and history and live stream never disagree.

mod conn;
mod presence;
mod sub;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use redis::{Script, Value};

use super::{Broker, BrokerError, History, Presence, Sink, Subscribers};
use crate::protocol::message::{Channel, Message, MessageId};
use conn::{unavailable, Commands, Conn};
pub use conn::{Passwords, Target, TargetError};

/// Redis settings beyond where it is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages retained per channel (0: pure pub/sub).
    pub history_size: usize,
    /// Age after which a message leaves history.
    pub history_ttl: Duration,
    /// Replicas that must hold a publish before it is answered (`WAIT`).
    pub publish_min_replicas: u32,
}

/// Trims, appends, expires and publishes; returns the new id.
/// KEYS[1] stream, KEYS[2] its slot's epoch key; ARGV: pub/sub channel, data,
/// maxlen, ttl ms, publish command.
const PUBLISH_LUA: &str = r#"
local key, maxlen, ttl = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local dropped = false
local fresh = false
if maxlen > 0 then
  local n = redis.call('XLEN', key)
  local first = nil
  if n == 0 then
    fresh = redis.call('EXISTS', key) == 0
  elseif n >= maxlen or n % 8 == 0 then
    -- Expired entries are trimmed when the stream is full and on every
    -- 8th entry otherwise: readers skip expired entries themselves (see
    -- the read script), so this only returns memory early, and checking
    -- on every publish would cost two more calls each time. The oldest
    -- entry decides whether anything expired: a forward read of one entry
    -- is cheap, a reverse search from the cutoff is not.
    first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    local t = redis.call('TIME')
    local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl
    if tonumber(string.match(first[1][1], '^(%d+)')) < cutoff then
      local old = redis.call('XREVRANGE', key, '(' .. cutoff .. '-0', '-', 'COUNT', 1)
      dropped = old[1][1]
      redis.call('XTRIM', key, 'MINID', cutoff .. '-0')
      first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
      n = redis.call('XLEN', key)
    end
  end
  if n >= maxlen then
    if n == maxlen then
      dropped = first[1][1]
    else
      local over = redis.call('XRANGE', key, '-', '+', 'COUNT', n - maxlen + 1)
      dropped = over[#over][1]
    end
    redis.call('XTRIM', key, 'MAXLEN', maxlen - 1)
  end
else
  -- Pure pub/sub keeps an empty stream for its ids: a first id needs the
  -- same care (below).
  fresh = redis.call('EXISTS', key) == 0
end
local floor, now = nil, nil
if fresh then
  -- A new stream vouches only for ids after its floor: an earlier stream
  -- expired a ttl after its last message, and data lost with Redis (a
  -- restart without persistence) also lost the epoch key. Read before the
  -- XADD, whose id is then not older than `now`.
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = tonumber(redis.call('GET', KEYS[2]))
  if not epoch then
    epoch = now
    redis.call('SET', KEYS[2], now)
  end
  floor = math.max(now - ttl, epoch)
end
-- A fresh stream's first id is `now-1`, not `now-0`: a subscriber that read
-- no stream in this same millisecond holds position `now-0` (the read
-- script) and skips live ids at or below it, so `now-0` would be lost.
local id = redis.call('XADD', key, 'MAXLEN', maxlen, now and (now .. '-1') or '*', 'd', ARGV[2])
if maxlen == 0 then
  dropped = id
elseif floor then
  -- XSETID refuses a deleted id above the stream's last one: an epoch
  -- ahead of the clock (stepped back) vouches for nothing before this id.
  local ms = tonumber(string.match(id, '^(%d+)'))
  if floor >= ms then
    dropped = ms .. '-0'
  else
    dropped = floor .. '-0'
  end
end
if dropped then
  redis.call('XSETID', key, id, 'MAXDELETEDID', dropped)
end
redis.call('PEXPIRE', key, ttl)
redis.call(ARGV[5], ARGV[1], id .. ' ' .. ARGV[2])
return id
"#;

/// Reads retained messages after ARGV[1] ('' for all), at most ARGV[2],
/// ignoring those older than ARGV[3] ms; ARGV[4] is the stream key's ttl and
/// KEYS[2] the slot's epoch key.
/// Returns `{last id, newest lost id, entries…}`, or `{'', floor, now}` for
/// no stream (see the publish script for the floor).
const READ_LUA: &str = r#"
local key, since, count, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', key) == 0 then
  local epoch = tonumber(redis.call('GET', KEYS[2]))
  if not epoch then
    epoch = now
    redis.call('SET', KEYS[2], now)
  end
  return {'', math.max(now - tonumber(ARGV[4]), epoch) .. '-0', now .. '-0'}
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local info = redis.call('XINFO', 'STREAM', key)
local last, gone = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then gone = info[i + 1] end
end
local start = '-'
if ttl > 0 then
  local cutoff = (now - ttl) .. '-0'
  local old = redis.call('XREVRANGE', key, '(' .. cutoff, '-', 'COUNT', 1)
  if #old > 0 and less(gone, old[1][1]) then gone = old[1][1] end
  start = cutoff
end
if since ~= '' and (start == '-' or not less(since, start)) then
  start = '(' .. since
end
local out = {last, gone}
if count > 0 then
  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', count)
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][2]
  end
end
return out
"#;

/// The stream key of a channel.
pub fn history_key(channel: &str) -> String {
    format!("push:{{{channel}}}:h")
}

/// The epoch key on the slot of `key` (a channel's history key): the Redis
/// time at which the slot's data began. It has no ttl, so data lost with
/// Redis loses it too, and the next stream created on the slot vouches for
/// nothing older. One key per slot (at most 16384), found through a table
/// of hash tags by slot.
pub fn epoch_key(key: &str) -> String {
    static TAGS: OnceLock<Box<[u32]>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; 16384];
        let mut missing = tags.len();
        let mut i = 0u32;
        while missing > 0 {
            let t = &mut tags[usize::from(slot(&i.to_string()))];
            if *t == u32::MAX {
                *t = i;
                missing -= 1;
            }
            i += 1;
        }
        tags.into_boxed_slice()
    });
    let tag = tags[usize::from(slot(key))];
    format!("push:epoch:{{{tag}}}")
}

/// The pub/sub channel of a channel.
pub fn pubsub_channel(channel: &str) -> String {
    format!("push:{{{channel}}}")
}

/// The channel name inside a pub/sub channel name.
fn channel_of(pubsub: &[u8]) -> Option<&str> {
    let inner = pubsub.strip_prefix(b"push:{")?.strip_suffix(b"}")?;
    std::str::from_utf8(inner).ok()
}

/// Splits a pub/sub payload `<id> <data>`.
fn parse_payload(payload: &[u8]) -> Option<(MessageId, &[u8])> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let id = std::str::from_utf8(&payload[..space]).ok()?.parse().ok()?;
    Some((id, &payload[space + 1..]))
}

/// The Cluster hash slot of a key (CRC16/XMODEM of its hash tag).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// State shared by the broker's tasks.
struct Shared {
    settings: Settings,
    commands: Commands,
    sink: Arc<dyn Sink>,
    /// Whether the last command round trip (or health check) worked.
    commands_up: AtomicBool,
    publish_script: Arc<Script>,
    read_script: Arc<Script>,
    /// This node's id in presence entries.
    node_id: String,
    /// The health check's last error while Redis is unreachable.
    down_reason: std::sync::Mutex<Option<String>>,
}

/// The Redis broker.
pub struct RedisBroker {
    shared: Arc<Shared>,
    sub: sub::Handle,
    /// Stops the broker's tasks when the broker is dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl RedisBroker {
    /// Creates the broker and starts its pub/sub, health and presence tasks.
    /// It does not wait for Redis: an unreachable Redis is an outage
    /// (`is_up` false, publishes 503) that ends when Redis comes.
    pub fn new(target: Target, settings: Settings, sink: Arc<dyn Sink>) -> RedisBroker {
        // rustls needs a process-wide crypto provider for rediss://; a second
        // install (another broker in the same process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let stop = tokio_util::sync::CancellationToken::new();
        let shared = Arc::new(Shared {
            settings,
            commands: Commands::new(target),
            sink,
            commands_up: AtomicBool::new(false),
            publish_script: Arc::new(Script::new(PUBLISH_LUA)),
            read_script: Arc::new(Script::new(READ_LUA)),
            node_id: format!("{:016x}", rand::random::<u64>()),
            down_reason: std::sync::Mutex::new(None),
        });
        let sub = sub::start(shared.clone(), stop.clone());
        tokio::spawn(health(shared.clone(), stop.clone()));
        tokio::spawn(presence::heartbeat(shared.clone(), stop.clone()));
        RedisBroker {
            shared,
            sub,
            _stop: stop.drop_guard(),
        }
    }
}

/// Pings Redis so that readiness reflects an outage even when nobody
/// publishes.
async fn health(shared: Arc<Shared>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = shared
            .commands
            .run(|mut c: Conn| {
                async move { redis::cmd("PING").query_async::<()>(&mut c).await }.boxed()
            })
            .await;
        let reason = result.err().map(|e| e.to_string());
        let was = shared.commands_up.swap(reason.is_none(), Ordering::Relaxed);
        let mut down = shared.down_reason.lock().unwrap_or_else(|e| e.into_inner());
        // The reason (refused, timed out, NOAUTH, WRONGPASS…) is logged once
        // per change of reason, not every half second.
        match &reason {
            None if !was => tracing::info!("redis reachable"),
            Some(r) if was || down.as_ref() != Some(r) => {
                tracing::warn!(reason = %r, "redis unreachable")
            }
            _ => {}
        }
        *down = reason;
    }
}

impl Shared {
    fn ttl_ms(&self) -> u64 {
        if self.settings.history_size == 0 || self.settings.history_ttl.is_zero() {
            // No history: the stream only keeps the last id, so that ids stay
            // increasing; it may go after a minute of silence.
            60_000
        } else {
            self.settings.history_ttl.as_millis().max(1) as u64
        }
    }

    fn maxlen(&self) -> usize {
        if self.settings.history_ttl.is_zero() {
            0
        } else {
            self.settings.history_size
        }
    }

    async fn publish(&self, channel: &str, data: Bytes) -> Result<MessageId, BrokerError> {
        let key = history_key(channel);
        let epoch = epoch_key(&key);
        let publish_cmd = if self.commands.target().is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let replicas = self.settings.publish_min_replicas;
        let id: String = if replicas == 0 {
            let script = self.publish_script.clone();
            let (maxlen, ttl) = (self.maxlen(), self.ttl_ms());
            let pubsub = pubsub_channel(channel);
            let data = data.clone();
            self.commands
                .run(move |mut c| {
                    async move {
                        script
                            .key(key)
                            .key(epoch)
                            .arg(pubsub)
                            .arg(&data[..])
                            .arg(maxlen)
                            .arg(ttl)
                            .arg(publish_cmd)
                            .invoke_async(&mut c)
                            .await
                    }
                    .boxed()
                })
                .await?
        } else {
            self.publish_and_wait(channel, &data, publish_cmd, replicas)
                .await?
        };
        self.commands_up.store(true, Ordering::Relaxed);
        id.parse()
            .map_err(|_| unavailable(format!("Redis returned a bad id {id:?}")))
    }

    /// Publishes and waits for `replicas` replicas (`WAIT`) on the same
    /// connection — WAIT covers the writes of the connection that sends it.
    async fn publish_and_wait(
        &self,
        channel: &str,
        data: &[u8],
        publish_cmd: &'static str,
        replicas: u32,
    ) -> Result<String, BrokerError> {
        let key = history_key(channel);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(PUBLISH_LUA)
            .arg(2)
            .arg(&key)
            .arg(epoch_key(&key))
            .arg(pubsub_channel(channel))
            .arg(data)
            .arg(self.maxlen())
            .arg(self.ttl_ms())
            .arg(publish_cmd)
            .cmd("WAIT")
            .arg(replicas)
            .arg(conn::RESPONSE_TIMEOUT.as_millis() as u64 / 2);
        let route = slot(&key);
        let (id, acked): (String, u32) = self
            .commands
            .run(move |c| {
                async move {
                    match c {
                        Conn::Direct(mut c) => pipe.query_async(&mut c).await,
                        Conn::Cluster(mut c) => {
                            use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                            let values = c
                                .route_pipeline(
                                    pipe,
                                    0,
                                    2,
                                    SingleNodeRoutingInfo::SpecificNode(Route::new(
                                        route,
                                        SlotAddr::Master,
                                    )),
                                )
                                .await?;
                            Ok(redis::from_redis_value(Value::Array(values))?)
                        }
                    }
                }
                .boxed()
            })
            .await?;
        if acked < replicas {
            // Published and maybe delivered, but not safe from a failover:
            // the publisher is told, and may retry (a retry is a new message).
            return Err(unavailable(format!(
                "message {id} reached {acked} of {replicas} replicas in time"
            )));
        }
        Ok(id)
    }

    async fn read(
        &self,
        channel: &Channel,
        since: Option<MessageId>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let key = history_key(channel);
        let epoch = epoch_key(&key);
        let since_arg = since.map(|s| s.to_string()).unwrap_or_default();
        // More than the retained count cannot exist.
        let count = limit.min(self.maxlen());
        let ttl = if self.maxlen() == 0 { 0 } else { self.ttl_ms() };
        let key_ttl = self.ttl_ms();
        let script = self.read_script.clone();
        let reply: Vec<Value> = self
            .commands
            .run(move |mut c| {
                async move {
                    script
                        .key(key)
                        .key(epoch)
                        .arg(since_arg)
                        .arg(count)
                        .arg(ttl)
                        .arg(key_ttl)
                        .invoke_async(&mut c)
                        .await
                }
                .boxed()
            })
            .await?;
        self.commands_up.store(true, Ordering::Relaxed);
        let bad = || unavailable("unexpected history reply from Redis");
        let text = |v: &Value| -> Option<String> {
            match v {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                Value::SimpleString(s) => Some(s.clone()),
                _ => None,
            }
        };
        let mut it = reply.iter();
        let last = it.next().and_then(text).ok_or_else(bad)?;
        let gone: MessageId = it
            .next()
            .and_then(text)
            .and_then(|g| g.parse().ok())
            .ok_or_else(bad)?;
        if last.is_empty() {
            // No stream: never published, or silent for its ttl. `gone` is
            // the floor a new stream will vouch for; the position is now.
            let now: MessageId = it
                .next()
                .and_then(text)
                .and_then(|g| g.parse().ok())
                .ok_or_else(bad)?;
            return Ok(History {
                messages: Vec::new(),
                recovered: since.is_none_or(|s| s >= gone),
                position: now,
            });
        }
        let position: MessageId = last.parse().map_err(|_| bad())?;
        let now = Instant::now();
        let mut messages = Vec::new();
        while let (Some(id), Some(data)) = (it.next(), it.next()) {
            let id: MessageId = text(id).and_then(|i| i.parse().ok()).ok_or_else(bad)?;
            let Value::BulkString(data) = data else {
                return Err(bad());
            };
            messages.push(Arc::new(Message::new(channel.clone(), id, data, now)));
        }
        Ok(History {
            messages,
            recovered: since.is_none_or(|s| s >= gone),
            position,
        })
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<MessageId, BrokerError>> {
        self.shared.publish(channel, data).boxed()
    }

    fn read(
        &self,
        channel: Channel,
        since: Option<MessageId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<History, BrokerError>> {
        async move { self.shared.read(&channel, since, limit).await }.boxed()
    }

    fn subscribe(
        &self,
        channel: &Channel,
        to: Arc<dyn Subscribers>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.sub.subscribe(channel, to)
    }

    fn unsubscribe(&self, channel: &Channel) {
        self.sub.unsubscribe(channel)
    }

    fn is_up(&self) -> bool {
        self.shared.commands_up.load(Ordering::Relaxed) && self.sub.is_up()
    }

    fn down_reason(&self) -> Option<String> {
        self.shared
            .down_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn presence(&self, channel: Channel) -> BoxFuture<'_, Result<Option<Presence>, BrokerError>> {
        async move { presence::read(&self.shared, &channel).await.map(Some) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_has_an_epoch_key_on_its_slot() {
        for ch in ["news", "a", "user:42", "x{y}z", ""] {
            let key = history_key(ch);
            assert_eq!(slot(&epoch_key(&key)), slot(&key), "{ch}");
        }
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}:h"), slot("push:{foo}"));
        assert_eq!(slot(&history_key("news")), slot(&pubsub_channel("news")));
    }

    #[test]
    fn payloads_and_names_round_trip() {
        assert_eq!(channel_of(pubsub_channel("a:b").as_bytes()), Some("a:b"));
        assert_eq!(channel_of(b"other"), None);
        let (id, data) = parse_payload(b"17-3 {\"a\":1}").unwrap();
        assert_eq!((id, data), (MessageId::new(17, 3), &b"{\"a\":1}"[..]));
        assert!(parse_payload(b"nonsense").is_none());
    }
}
