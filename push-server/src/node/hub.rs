//! The hub: which local connection is subscribed to which channel, and the
//! fan-out of broker messages to their outbound queues.
//!
//! Invariants (the hot path):
//! - A channel is subscribed at the broker once per node, by its first local
//!   subscriber, and unsubscribed when the last one leaves.
//! - Fan-out never blocks and never allocates per subscriber: each subscriber
//!   gets an `Arc` clone of the same pre-encoded [`Message`], pushed into its
//!   bounded queue under a short per-channel lock that is never held across
//!   an await. The connection's task is woken (an atomic waker) only when its
//!   queue stops being empty or holds a full batch, not once per message.
//! - The lane: a connection whose transport can write a message without its
//!   task (an SSE stream of one channel on the raw socket) is written from
//!   the fan-out itself when its task waits with nothing queued, in one
//!   non-blocking write under the queue's lock; anything else (a full socket,
//!   a queue that is not empty, a task that writes) takes the queue. A wide
//!   fan-out (more than [`LANE_FANOUT`] subscribers) queues instead and hands
//!   the open lanes to flush tasks that write them in slices, yielding to the
//!   scheduler between slices ([`flush`]). The decision and the figures:
//!   docs/architecture.md, "The lane".
//! - Slow consumers: when a subscriber's queue is full, the message is **not**
//!   dropped silently: the connection is marked slow and told
//!   `reconnect`/`slow_consumer`, then closed; it resumes from history with
//!   the last id it saw. Others are unaffected, because nothing waits on it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio::sync::Notify;

use crate::broker::{Broker, BrokerError, Sink, Subscribers};
use crate::metrics::{self, Metrics};
use crate::protocol::{Channel, Disconnect, Message, MessageId};

const SHARDS: usize = 64;

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Its outbound queue overflowed.
    SlowConsumer = 1,
    /// The broker lost messages of one of its channels that history no
    /// longer holds (see [`Sink::gap`]): reconnecting and resuming tells the
    /// client honestly (`recovered:false` / `event: reset`).
    BrokerGap = 2,
}

impl Kick {
    /// How the connection ends.
    pub fn disconnect(self) -> Disconnect {
        match self {
            Kick::SlowConsumer => Disconnect::SlowConsumer,
            Kick::BrokerGap => Disconnect::BrokerGap,
        }
    }
}

/// The part of a connection the hub sees: its queue and its kick signal.
#[derive(Debug)]
pub struct ConnShared {
    /// Unique per node, for logs and `welcome`.
    pub id: u64,
    /// The bounded outbound queue (`outbound_queue` messages) and the lane.
    /// A plain deque under a short lock, inline here: an idle connection's
    /// queue allocates nothing (a channel would keep a block of slots per
    /// connection).
    queue: Mutex<Queue>,
    /// Bound of `queue`.
    capacity: usize,
    /// Queued messages that make a full batch: [`WRITE_BATCH`], or half the
    /// queue when that is smaller, so that a connection waiting out a write
    /// delay is woken well before its queue overflows.
    batch: usize,
    /// The connection task waiting in [`Receiver::recv`]: woken when the
    /// queue stops being empty or the connection is kicked. An atomic waker,
    /// not a `Notify`: no lock and no waiter list per delivery.
    waker: AtomicWaker,
    /// Set when the connection's receiver is gone: pushes are dropped.
    closed: AtomicBool,
    /// Non-zero once kicked; the first reason wins.
    kick: AtomicU8,
    /// The transport's read may have something: set by its waker (see
    /// `transport::gate`), taken before it is polled.
    pub read_woken: AtomicBool,
    /// Wakes waiters of [`ConnShared::kicked`] (a write stuck behind a full
    /// socket); the main loop learns of kicks from [`Receiver::recv`].
    kicked: Notify,
    /// The token's `sub`, shown by presence.
    pub user: Option<Arc<str>>,
}

/// A connection's socket as the fan-out may write it: the bytes of one
/// message, now or not at all (see [`ConnShared::push`]).
pub trait Lane: Send + Sync {
    /// The `transport` label its deliveries are counted under.
    fn kind(&self) -> metrics::Transport;
    /// Writes what the socket takes of `msg`'s bytes without waiting:
    /// `WouldBlock` when it takes none.
    fn try_write(&self, msg: &Message) -> std::io::Result<Wrote>;
    /// The transport has bytes of its own half-written on the socket (a
    /// WebSocket Pong that tungstenite answered while reading): no lane
    /// write may go between them.
    fn blocked(&self) -> bool {
        false
    }
}

/// How much of a message a [`Lane`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    All,
    /// This many bytes, fewer than the message's.
    Part(usize),
}

/// A connection's queue and its lane, under one lock.
struct Queue {
    msgs: VecDeque<Arc<Message>>,
    /// Boxed: most connections have none, and each is 8 bytes here.
    lane: Option<Box<LaneState<dyn Lane>>>,
}

/// A lane and what the fan-out must know to use it.
struct LaneState<L: ?Sized> {
    /// The task waits for messages with nothing to write, and offered the
    /// lane: a delivery may be written by the fan-out, here and now.
    idle: bool,
    /// A message the lane wrote in part, and how much of it: the task
    /// writes the rest before anything else ([`Receiver::claim`]).
    rest: Option<(Arc<Message>, usize)>,
    /// Newest id the connection has sent of its one channel: older ones
    /// are duplicates (a broker may deliver what its history already gave).
    floor: MessageId,
    io: L,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("msgs", &self.msgs.len())
            .field("lane", &self.lane.as_ref().map(|l| l.idle))
            .finish()
    }
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
enum PushError {
    Full,
    Closed,
}

/// How [`ConnShared::push`] may use a connection's lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Write through the lane now, if it is open (a narrow fan-out).
    Lane,
    /// Queue without waking the task, for a [`ConnShared::flush_lane`] of
    /// a slice later (a wide fan-out).
    Slice,
}

/// What the caller of [`ConnShared::push`] still owes the message.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Done,
    /// Queued behind an open lane: a [`ConnShared::flush_lane`] must follow.
    Flush,
}

/// The connection task's end of its queue; dropping it closes the queue.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<ConnShared>,
}

/// Most messages a connection writes in one batch (one socket write).
pub const WRITE_BATCH: usize = 64;

/// Most subscribers of a channel whose lanes the fan-out writes itself,
/// under the channel's locks. A wider fan-out queues, and its open lanes are
/// written by flush tasks of [`LANE_SLICE`] connections each.
const LANE_FANOUT: usize = 8;

/// Connections a flush writes through their lanes before it yields to the
/// worker: about 0.3 ms of writes here. Measured: docs/benchmarks.md,
/// "Issue 14, sliced lanes".
const LANE_SLICE: usize = 64;

/// What wakes a connection's main loop.
#[derive(Debug)]
pub enum Inbound {
    /// Messages are queued: take them with [`Receiver::try_recv`].
    Queued,
    /// The connection was kicked: tell the client and close.
    Kicked(Kick),
}

impl Receiver {
    /// Resolves once a message is queued (a full batch if `full_batch`: while
    /// a write delay runs) or the lane left a message's rest to write, or
    /// once the connection was kicked (checked first: a slow consumer's
    /// queue is full by definition).
    ///
    /// `lane`: the task has nothing to write but this session's messages:
    /// while it waits, with one subscription, the fan-out may write
    /// deliveries itself. `None` takes the lane back.
    pub fn recv<'a>(
        &'a self,
        full_batch: bool,
        lane: Option<&'a Session>,
    ) -> impl Future<Output = Inbound> + 'a {
        let at_least = if full_batch { self.shared.batch } else { 1 };
        std::future::poll_fn(move |cx| {
            let shared = &*self.shared;
            // Registered before checking, so a push in between wakes us.
            shared.waker.register(cx.waker());
            if let Some(kick) = shared.kick_reason() {
                return Poll::Ready(Inbound::Kicked(kick));
            }
            let mut q = lock(&shared.queue);
            let queued = q.msgs.len() >= at_least;
            let Some(l) = q.lane.as_deref_mut() else {
                return if queued {
                    Poll::Ready(Inbound::Queued)
                } else {
                    Poll::Pending
                };
            };
            if queued || l.rest.is_some() {
                l.idle = false;
                return Poll::Ready(Inbound::Queued);
            }
            let sent = lane.and_then(Session::only_sent);
            l.idle = sent.is_some() && !l.io.blocked();
            if let Some(sent) = sent {
                l.floor = l.floor.max(sent);
            }
            Poll::Pending
        })
    }

    /// A queued message, if any.
    pub fn try_recv(&self) -> Option<Arc<Message>> {
        let mut q = lock(&self.shared.queue);
        let m = q.msgs.pop_front();
        if m.is_none() && q.msgs.capacity() > 64 {
            // A burst is over: give its memory back.
            q.msgs.shrink_to_fit();
        }
        m
    }

    /// Gives the connection's socket to the fan-out while the task waits
    /// (see [`Receiver::recv`]); for the connection's life.
    pub fn set_lane<L: Lane + 'static>(&self, lane: L) {
        lock(&self.shared.queue).lane = Some(Box::new(LaneState {
            idle: false,
            rest: None,
            floor: MessageId::ZERO,
            io: lane,
        }));
    }

    /// Takes the lane back before the task writes anything: from here on
    /// only the task writes, until it waits again. Returns what the lane
    /// left of a message, to be written first: the message and how many of
    /// its bytes are already out.
    pub fn claim(&self) -> Option<(Arc<Message>, usize)> {
        self.shared.claim_lane()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut q = lock(&self.shared.queue);
        q.msgs.clear();
        // The socket is closed with the connection, not with the last
        // channel entry that still holds this.
        q.lane = None;
    }
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl ConnShared {
    /// A new connection with a queue of `queue` messages.
    pub fn new(queue: usize, user: Option<Arc<str>>) -> (Arc<ConnShared>, Receiver) {
        let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ConnShared {
            id,
            queue: Mutex::new(Queue {
                msgs: VecDeque::new(),
                lane: None,
            }),
            capacity: queue,
            batch: WRITE_BATCH.min(queue.div_ceil(2)),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            kick: AtomicU8::new(0),
            read_woken: AtomicBool::new(true),
            kicked: Notify::new(),
            user,
        });
        (shared.clone(), Receiver { shared })
    }

    /// [`Receiver::claim`], for a transport's own writes (tungstenite's).
    pub fn claim_lane(&self) -> Option<(Arc<Message>, usize)> {
        let mut q = lock(&self.queue);
        let l = q.lane.as_deref_mut()?;
        l.idle = false;
        l.rest.take()
    }

    /// The connection's subscriptions change: no lane write until the task
    /// offers it again, and the newest id sent is that of the channel it
    /// will have then (a new channel's ids have nothing to do with the old).
    fn lane_reset(&self) {
        if let Some(l) = lock(&self.queue).lane.as_deref_mut() {
            l.idle = false;
            l.floor = MessageId::ZERO;
        }
    }

    /// Queues `msg`, or writes it through the connection's lane when its
    /// task waits with nothing queued (see [`Via`]).
    fn push(&self, msg: Arc<Message>, metrics: &Metrics, via: Via) -> Result<Pushed, PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        let wake = {
            let mut q = lock(&self.queue);
            let kicked = self.kick.load(Ordering::Acquire) != 0;
            let Queue { msgs, lane } = &mut *q;
            if let Some(l) = lane.as_deref_mut().filter(|l| l.idle && !kicked) {
                if msg.id <= l.floor {
                    // Sent already (history, or the broker said it twice).
                    return Ok(Pushed::Done);
                }
                if via == Via::Slice || !msgs.is_empty() {
                    // The task stays asleep: while the lane is open, what is
                    // queued is a flush's to write, and the first message
                    // queued schedules it. A narrow fan-out's message too,
                    // when a wide one's waits for its flush (the channel
                    // lost subscribers in between): it may not overtake it.
                    if msgs.len() >= self.capacity {
                        return Err(PushError::Full);
                    }
                    msgs.push_back(msg);
                    return Ok(if msgs.len() == 1 {
                        Pushed::Flush
                    } else {
                        Pushed::Done
                    });
                }
                // The task waits with nothing queued: this write is the one
                // it would make, without waking it. A syscall under the
                // connection's own lock, which only its task and this
                // fan-out take; the write never waits.
                match l.io.try_write(&msg) {
                    Ok(Wrote::All) => {
                        l.floor = msg.id;
                        let kind = l.io.kind();
                        drop(q);
                        metrics.transport(kind).delivered.inc();
                        metrics
                            .delivery_latency
                            .observe(msg.accepted.elapsed().as_secs_f64());
                        return Ok(Pushed::Done);
                    }
                    Ok(Wrote::Part(n)) => {
                        // The socket took part of it: the task writes the
                        // rest before anything else.
                        l.floor = msg.id;
                        l.idle = false;
                        l.rest = Some((msg, n));
                        drop(q);
                        self.waker.wake();
                        return Ok(Pushed::Done);
                    }
                    // Full or failed: the task's own write waits for room
                    // or finds the error.
                    Err(_) => l.idle = false,
                }
            }
            if msgs.len() >= self.capacity {
                return Err(PushError::Full);
            }
            msgs.push_back(msg);
            msgs.len() == 1 || msgs.len() == self.batch
        };
        // The task drains the queue once woken; waking it for every message
        // of a burst would only cost. A full batch wakes it too, in case it
        // waits out a write delay.
        if wake {
            self.waker.wake();
        }
        Ok(Pushed::Done)
    }

    /// Writes what [`Via::Slice`] queued behind the open lane, as the task
    /// would have, when it is one message; anything the socket does not
    /// take whole goes back to the task, which is woken for it. A burst (more
    /// than one message queued by now) is the task's too: it writes them in
    /// one `writev` where the lane would make a system call each. So is
    /// everything once the task took its lane back meanwhile.
    fn flush_lane(&self, metrics: &Metrics) {
        let mut q = lock(&self.queue);
        let kicked = self.kick.load(Ordering::Acquire) != 0;
        let Queue { msgs, lane } = &mut *q;
        let Some(l) = lane.as_deref_mut() else {
            // Closed: the receiver is gone, and the queue with it.
            return;
        };
        if msgs.is_empty() {
            return;
        }
        if msgs.len() > 1 || !l.idle || kicked {
            l.idle = false;
            drop(q);
            self.waker.wake();
            return;
        }
        let transport = metrics.transport(l.io.kind());
        while let Some(msg) = msgs.front() {
            if msg.id <= l.floor {
                msgs.pop_front();
                continue;
            }
            match l.io.try_write(msg) {
                Ok(Wrote::All) => {
                    l.floor = msg.id;
                    transport.delivered.inc();
                    metrics
                        .delivery_latency
                        .observe(msg.accepted.elapsed().as_secs_f64());
                    msgs.pop_front();
                }
                Ok(Wrote::Part(n)) => {
                    l.floor = msg.id;
                    l.idle = false;
                    l.rest = msgs.pop_front().map(|m| (m, n));
                    break;
                }
                Err(_) => {
                    l.idle = false;
                    break;
                }
            }
        }
        let wake = !l.idle;
        drop(q);
        if wake {
            self.waker.wake();
        }
    }

    /// Marks the connection for closing and wakes every waiter of
    /// [`ConnShared::kicked`]; the first reason wins. Whether this call was
    /// the first.
    fn kick(&self, why: Kick) -> bool {
        let first = self
            .kick
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.waker.wake();
            self.kicked.notify_waiters();
        }
        first
    }

    /// Kicks a slow consumer, counted once per connection. The one place a
    /// slow consumer is decided to be one: its queue (hub) or its ack
    /// pending queue (connection) overflowed. Nothing is dropped silently:
    /// the client is told to reconnect and resumes from history.
    fn kick_slow(&self, metrics: &Metrics) {
        if self.kick(Kick::SlowConsumer) {
            metrics.slow_consumer_disconnects.inc();
        }
    }

    /// Marks the transport's read woken and wakes the connection's task.
    pub fn wake_read(&self) {
        self.read_woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Why the connection was kicked, if it was.
    pub fn kick_reason(&self) -> Option<Kick> {
        match self.kick.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Kick::SlowConsumer),
            _ => Some(Kick::BrokerGap),
        }
    }

    /// Resolves once the connection was kicked, with the reason. Several
    /// waiters may exist at once (the main loop and a pending write).
    pub async fn kicked(&self) -> Kick {
        loop {
            let notified = self.kicked.notified();
            tokio::pin!(notified);
            // Registered before the check, so a kick in between is not missed.
            notified.as_mut().enable();
            if let Some(kick) = self.kick_reason() {
                return kick;
            }
            notified.await;
        }
    }
}

type Ready = Shared<BoxFuture<'static, Result<(), BrokerError>>>;

/// One channel's local subscribers; the broker holds it too, and delivers
/// to it directly ([`Subscribers`]).
struct Entry {
    state: Mutex<EntryState>,
    metrics: Arc<Metrics>,
}

struct EntryState {
    subs: Slab<Arc<ConnShared>>,
    /// Newest id fanned out: the broker may repeat itself after a reconnect.
    last: MessageId,
    /// Resolves when the broker subscription is live; `None` once it is
    /// (dropped then, to keep idle channels small). Boxed: it exists only
    /// while a Redis subscription is pending, and a pointer keeps every
    /// entry in mimalloc's 96-byte class (see the assertion below).
    ready: Option<Box<Ready>>,
}

// An entry per subscribed channel: 16 bytes of `Arc` counts plus this. One
// byte more and every channel's entry takes the next size class (112).
const _: () = assert!(std::mem::size_of::<Entry>() <= 80);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the maps stay consistent
    // because every critical section is a few non-panicking operations.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One lock's share of the channel map.
type Shard = Mutex<HashMap<Channel, Arc<Entry>>>;

/// The channel → local subscribers map; the broker's [`Sink`].
pub struct Registry {
    shards: Box<[Shard]>,
    /// Bumped by every subscribe and unsubscribe ([`Sink::presence_version`]).
    version: AtomicU64,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            version: AtomicU64::new(0),
        })
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Channel, Arc<Entry>>> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        lock(&self.shards[(h.finish() as usize) % SHARDS])
    }

    fn entry(&self, channel: &str) -> Option<Arc<Entry>> {
        self.shard(channel).get(channel).cloned()
    }

    /// Channels with local subscribers now.
    pub fn channels(&self) -> Vec<Channel> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }
}

impl Subscribers for Entry {
    fn deliver(&self, msg: Arc<Message>) {
        let mut st = lock(&self.state);
        if msg.id <= st.last {
            return;
        }
        st.last = msg.id;
        let via = if st.subs.len() <= LANE_FANOUT {
            Via::Lane
        } else {
            Via::Slice
        };
        let mut open = Vec::new();
        for (_, conn) in st.subs.iter() {
            match conn.push(msg.clone(), &self.metrics, via) {
                Ok(Pushed::Done) | Err(PushError::Closed) => {}
                Ok(Pushed::Flush) => {
                    if open.capacity() == 0 {
                        open.reserve_exact(st.subs.len());
                    }
                    open.push(conn.clone());
                }
                Err(PushError::Full) => conn.kick_slow(&self.metrics),
            }
        }
        if !open.is_empty() {
            flush(open, &self.metrics);
        }
    }
}

/// Writes the open lanes of a wide fan-out ([`Via::Slice`]) outside the
/// channel's locks: a task per worker thread, each a run of slices of
/// [`LANE_SLICE`] connections with a `yield_now` between them, which lets
/// the worker poll its sockets and run every other ready task first.
/// Outside a runtime (unit tests), here.
fn flush(conns: Vec<Arc<ConnShared>>, metrics: &Arc<Metrics>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        for conn in &conns {
            conn.flush_lane(metrics);
        }
        return;
    };
    let slices = conns.len().div_ceil(LANE_SLICE);
    let runs = rt.metrics().num_workers().clamp(1, slices);
    let per_run = slices.div_ceil(runs) * LANE_SLICE;
    let conns = Arc::new(conns);
    for start in (0..conns.len()).step_by(per_run) {
        let (conns, metrics) = (conns.clone(), metrics.clone());
        drop(rt.spawn(async move {
            let end = conns.len().min(start + per_run);
            for (i, slice) in conns[start..end].chunks(LANE_SLICE).enumerate() {
                if i > 0 {
                    tokio::task::yield_now().await;
                }
                for conn in slice {
                    conn.flush_lane(&metrics);
                }
            }
        }));
    }
}

impl Sink for Registry {
    fn gap(&self, channel: &Channel) {
        let Some(entry) = self.entry(channel) else {
            return;
        };
        let st = lock(&entry.state);
        for (_, conn) in st.subs.iter() {
            conn.kick(Kick::BrokerGap);
        }
    }

    fn channels(&self) -> Vec<Channel> {
        Registry::channels(self)
    }

    fn local_presence(&self, channel: &str) -> (usize, Vec<Arc<str>>) {
        let Some(entry) = self.entry(channel) else {
            return (0, Vec::new());
        };
        let st = lock(&entry.state);
        let mut users: Vec<Arc<str>> = st.subs.iter().filter_map(|(_, c)| c.user.clone()).collect();
        users.sort();
        users.dedup();
        (st.subs.len(), users)
    }

    fn presence_version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::Acquire))
    }
}

/// The hub: registry plus broker.
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(registry: Arc<Registry>, broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Hub {
        Hub {
            registry,
            broker,
            metrics,
        }
    }

    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Adds `conn` to `channel`'s subscribers; subscribes at the broker if it
    /// is the first. Returns the slot and the broker readiness to await.
    ///
    /// Lock order: the registry's shard, then the broker's lock of the
    /// channel, then the entry's state; a delivery holds the broker's lock
    /// and takes the entry's, never a shard of the registry.
    fn register(&self, channel: &Channel, conn: &Arc<ConnShared>) -> (usize, Option<Ready>) {
        let mut shard = self.registry.shard(channel);
        let entry = match shard.get(channel) {
            Some(entry) => entry.clone(),
            None => {
                let entry = Arc::new(Entry {
                    state: Mutex::new(EntryState {
                        // Most channels have one subscriber here (personal
                        // channels): room for one, not the four a first
                        // insert would reserve.
                        subs: Slab::with_capacity(1),
                        last: MessageId::ZERO,
                        ready: None,
                    }),
                    metrics: self.metrics.clone(),
                });
                // Queued while the shard lock is held, so it cannot overtake
                // an unsubscribe of the same channel.
                let ready = self.broker.subscribe(channel, entry.clone()).shared();
                // Already live (the memory broker): nothing to keep.
                if !matches!(ready.peek(), Some(Ok(()))) {
                    lock(&entry.state).ready = Some(Box::new(ready));
                }
                shard.insert(channel.clone(), entry.clone());
                entry
            }
        };
        let mut st = lock(&entry.state);
        let key = st.subs.insert(conn.clone());
        self.registry.version.fetch_add(1, Ordering::Release);
        (key, st.ready.as_deref().cloned())
    }

    /// The broker subscription of `channel` is live: forget its future.
    fn mark_ready(&self, channel: &str) {
        if let Some(entry) = self.registry.entry(channel) {
            lock(&entry.state).ready = None;
        }
    }
    fn unregister(&self, channel: &Channel, key: usize) {
        let mut shard = self.registry.shard(channel);
        let Some(entry) = shard.get(channel).cloned() else {
            return;
        };
        let empty = {
            let mut st = lock(&entry.state);
            if st.subs.contains(key) {
                st.subs.remove(key);
                self.registry.version.fetch_add(1, Ordering::Release);
            }
            st.subs.is_empty()
        };
        // The entry's lock is released first: the broker's lock of the
        // channel comes before it (see `register`).
        if empty {
            shard.remove(channel);
            self.broker.unsubscribe(channel);
        }
    }

    /// Connections (and their users) subscribed to `channel` on this node.
    pub fn presence(&self, channel: &str) -> (usize, Vec<Arc<str>>) {
        self.registry.local_presence(channel)
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("already subscribed to this channel")]
    AlreadySubscribed,
    #[error("a connection may hold at most {0} subscriptions")]
    TooManyChannels(usize),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The outcome of a subscription.
#[derive(Debug)]
pub struct Subscribed {
    /// False when `since` was older than retained history (a gap).
    pub recovered: bool,
    /// Retained messages after `since`, to send before live ones.
    pub messages: Vec<Arc<Message>>,
    /// The position the subscription starts from (after `messages`).
    pub position: MessageId,
}

/// One subscription of a connection.
#[derive(Debug)]
struct Sub {
    channel: Channel,
    /// Slot in the channel's subscriber slab.
    key: usize,
    /// Newest id sent: older or equal ids are duplicates.
    last: MessageId,
}

/// A connection's subscriptions, shared by both transports. Dropping it
/// unsubscribes everything.
pub struct Session {
    hub: Arc<Hub>,
    /// What the hub sees of this connection.
    pub shared: Arc<ConnShared>,
    /// A few channels per connection: a vector beats a map here.
    subs: Vec<Sub>,
    max_channels: usize,
}

impl Session {
    pub fn new(hub: Arc<Hub>, shared: Arc<ConnShared>, max_channels: usize) -> Session {
        Session {
            hub,
            shared,
            subs: Vec::new(),
            max_channels,
        }
    }

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subs.iter().any(|s| &*s.channel == channel)
    }

    /// Subscribes: live delivery is registered **before** history is read,
    /// so every message after `since` is in the history page, in the queue,
    /// or both — and [`Session::accept`] drops the "both".
    pub async fn subscribe(
        &mut self,
        channel: Channel,
        since: Option<MessageId>,
    ) -> Result<Subscribed, SubscribeError> {
        if self.is_subscribed(&channel) {
            return Err(SubscribeError::AlreadySubscribed);
        }
        if self.subs.len() >= self.max_channels {
            return Err(SubscribeError::TooManyChannels(self.max_channels));
        }
        // Before the hub may deliver this channel's messages: they are held
        // back until history is read, which a lane write would skip.
        self.shared.lane_reset();
        let (key, ready) = self.hub.register(&channel, &self.shared);
        // Until the history is read, queued live messages of this channel are
        // held back by `last = MAX`.
        self.subs.push(Sub {
            channel: channel.clone(),
            key,
            last: MessageId::new(u64::MAX, u64::MAX),
        });
        self.hub.metrics.subscriptions.inc();
        let result = async {
            if let Some(ready) = ready {
                ready.await?;
                self.hub.mark_ready(&channel);
            }
            let limit = if since.is_some() { usize::MAX } else { 0 };
            self.hub.broker.read(channel.clone(), since, limit).await
        }
        .await;
        match result {
            Ok(history) => {
                let last = history
                    .messages
                    .last()
                    .map_or(history.position, |m| m.id.max(history.position));
                if let Some(sub) = self.subs.iter_mut().find(|s| s.channel == channel) {
                    sub.last = last;
                }
                Ok(Subscribed {
                    recovered: history.recovered,
                    messages: history.messages,
                    position: last,
                })
            }
            Err(e) => {
                self.unsubscribe(&channel);
                Err(e.into())
            }
        }
    }

    /// The connection cannot keep up (its ack pending queue overflowed).
    pub fn kick_slow(&self) {
        self.shared.kick_slow(&self.hub.metrics);
    }

    /// Removes a subscription; false if there was none.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(i) = self.subs.iter().position(|s| &*s.channel == channel) else {
            return false;
        };
        self.shared.lane_reset();
        let sub = self.subs.swap_remove(i);
        self.hub.unregister(&sub.channel, sub.key);
        self.hub.metrics.subscriptions.dec();
        true
    }

    /// The newest id sent of the connection's subscription, if it has
    /// exactly one (the lane's condition, see [`Receiver::recv`]).
    pub fn only_sent(&self) -> Option<MessageId> {
        match &self.subs[..] {
            [sub] => Some(sub.last),
            _ => None,
        }
    }

    /// Whether a queued message should be sent: subscribed and not seen.
    /// Records it as seen.
    pub fn accept(&mut self, msg: &Message) -> bool {
        match self.subs.iter_mut().find(|s| s.channel == msg.channel) {
            Some(sub) if msg.id > sub.last => {
                sub.last = msg.id;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for sub in self.subs.drain(..) {
            self.hub.unregister(&sub.channel, sub.key);
            self.hub.metrics.subscriptions.dec();
        }
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
