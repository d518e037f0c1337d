//! Unit tests of the hub: fan-out, broker subscriptions, resume, slow
//! consumers, over the memory broker.

use std::time::Duration;

use super::*;
use crate::broker::memory::MemoryBroker;

fn hub() -> Arc<Hub> {
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new();
    let broker = MemoryBroker::new(100, Duration::from_secs(60));
    Arc::new(Hub::new(registry, broker, metrics))
}

fn session(hub: &Arc<Hub>, queue: usize) -> (Session, Receiver) {
    let (shared, rx) = ConnShared::new(queue, None);
    (Session::new(hub.clone(), shared, 4), rx)
}

async fn publish(hub: &Hub, channel: &str, data: &str) -> MessageId {
    hub.broker()
        .publish(channel, data.as_bytes().to_vec().into())
        .await
        .expect("memory publish")
}

#[tokio::test]
async fn fan_out_shares_one_encoded_message() {
    let hub = hub();
    let (mut a, rx_a) = session(&hub, 8);
    let (mut b, rx_b) = session(&hub, 8);
    a.subscribe("news".into(), None).await.unwrap();
    b.subscribe("news".into(), None).await.unwrap();
    let id = publish(&hub, "news", "1").await;
    let (ma, mb) = (rx_a.try_recv().unwrap(), rx_b.try_recv().unwrap());
    assert!(Arc::ptr_eq(&ma, &mb), "one Message for every subscriber");
    assert_eq!(ma.id, id);
    assert!(a.accept(&ma) && !a.accept(&ma), "a duplicate is refused");
    assert!(rx_a.try_recv().is_none());
}

#[tokio::test]
async fn one_broker_subscription_per_channel_per_node() {
    let hub = hub();
    let (mut a, _rx_a) = session(&hub, 8);
    let (mut b, _rx_b) = session(&hub, 8);
    a.subscribe("c".into(), None).await.unwrap();
    b.subscribe("c".into(), None).await.unwrap();
    assert_eq!(hub.registry.channels().len(), 1);
    assert_eq!(hub.presence("c").0, 2);
    assert!(a.unsubscribe("c") && !a.unsubscribe("c"));
    assert_eq!(hub.presence("c").0, 1);
    drop(b);
    assert!(
        hub.registry.channels().is_empty(),
        "last one out unsubscribes"
    );
}

#[tokio::test]
async fn subscribe_refusals() {
    let hub = hub();
    let (mut a, _rx) = session(&hub, 8);
    a.subscribe("c".into(), None).await.unwrap();
    assert_eq!(
        a.subscribe("c".into(), None).await.unwrap_err(),
        SubscribeError::AlreadySubscribed
    );
    for ch in ["d", "e", "f"] {
        a.subscribe(ch.into(), None).await.unwrap();
    }
    assert_eq!(
        a.subscribe("g".into(), None).await.unwrap_err(),
        SubscribeError::TooManyChannels(4)
    );
}

#[tokio::test]
async fn resume_is_gap_free_and_duplicate_free() {
    let hub = hub();
    let first = publish(&hub, "c", "1").await;
    let second = publish(&hub, "c", "2").await;
    let (mut a, rx) = session(&hub, 8);
    let sub = a.subscribe("c".into(), Some(first)).await.unwrap();
    assert!(sub.recovered);
    assert_eq!(
        sub.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [second]
    );
    assert_eq!(sub.position, second);
    let third = publish(&hub, "c", "3").await;
    let m = rx.try_recv().unwrap();
    assert!(a.accept(&m) && m.id == third);
}

#[tokio::test]
async fn a_full_queue_kicks_a_slow_consumer_counted_once() {
    let hub = hub();
    let (mut slow, rx) = session(&hub, 2);
    let (mut fine, rx_fine) = session(&hub, 8);
    slow.subscribe("c".into(), None).await.unwrap();
    fine.subscribe("c".into(), None).await.unwrap();
    for i in 0..4 {
        publish(&hub, "c", &i.to_string()).await;
    }
    assert_eq!(slow.shared.kick_reason(), Some(Kick::SlowConsumer));
    assert_eq!(hub.metrics.slow_consumer_disconnects.get(), 1);
    assert!(matches!(
        rx.recv(false, None).await,
        Inbound::Kicked(Kick::SlowConsumer)
    ));
    // Others are unaffected.
    assert_eq!(fine.shared.kick_reason(), None);
    assert!((0..4).all(|_| rx_fine.try_recv().is_some()));
    slow.kick_slow();
    assert_eq!(hub.metrics.slow_consumer_disconnects.get(), 1);
}

#[tokio::test]
async fn a_dropped_receiver_closes_the_queue() {
    let hub = hub();
    let (mut a, rx) = session(&hub, 8);
    a.subscribe("c".into(), None).await.unwrap();
    drop(rx);
    publish(&hub, "c", "1").await;
    assert_eq!(a.shared.kick_reason(), None, "a closed queue is not slow");
}

/// Publishing to a channel while it is subscribed and unsubscribed from
/// other threads must not deadlock: the hub takes its shard lock and then
/// the broker's, so a delivery (which runs under the broker's lock) must
/// never wait for a hub shard lock.
#[test]
fn publish_races_subscribe_without_deadlock() {
    use futures_util::FutureExt;
    use std::sync::mpsc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new();
    let broker = MemoryBroker::new(100, Duration::from_secs(60));
    let hub = Arc::new(Hub::new(registry, broker.clone(), metrics));

    const ROUNDS: usize = 100_000;
    let (done, finished) = mpsc::channel();
    let publisher = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                broker.publish_now("race", b"1");
            }
            let _ = done.send("publisher");
        })
    };
    let subscriber = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            let (shared, _rx) = ConnShared::new(ROUNDS, None);
            let mut session = Session::new(hub, shared, 4);
            for _ in 0..ROUNDS {
                session
                    .subscribe("race".into(), None)
                    .now_or_never()
                    .expect("the memory broker subscribes at once")
                    .expect("subscribed");
                assert!(session.unsubscribe("race"));
            }
            let _ = done.send("subscriber");
        })
    };
    for _ in 0..2 {
        finished
            .recv_timeout(Duration::from_secs(20))
            .expect("publish and subscribe deadlocked");
    }
    publisher.join().unwrap();
    subscriber.join().unwrap();
}

/// What a [`FakeLane`] answers to its next write.
#[derive(Clone, Copy)]
enum Answer {
    All,
    Part(usize),
    Full,
}

/// A lane that answers as told and keeps the ids it wrote (in part or whole).
struct FakeLane {
    answer: Mutex<Answer>,
    wrote: Mutex<Vec<MessageId>>,
    blocked: AtomicBool,
}

impl FakeLane {
    fn new() -> Arc<FakeLane> {
        Arc::new(FakeLane {
            answer: Mutex::new(Answer::All),
            wrote: Mutex::new(Vec::new()),
            blocked: AtomicBool::new(false),
        })
    }

    fn answer(&self, a: Answer) {
        *lock(&self.answer) = a;
    }

    fn wrote(&self) -> Vec<MessageId> {
        lock(&self.wrote).clone()
    }
}

impl Lane for FakeLane {
    fn kind(&self) -> metrics::Transport {
        metrics::Transport::Sse
    }

    fn try_write(&self, msg: &Message) -> std::io::Result<Wrote> {
        match *lock(&self.answer) {
            Answer::Full => Err(std::io::ErrorKind::WouldBlock.into()),
            a => {
                lock(&self.wrote).push(msg.id);
                Ok(match a {
                    Answer::Part(n) => Wrote::Part(n),
                    _ => Wrote::All,
                })
            }
        }
    }
}

/// A connection's handle on a [`FakeLane`] the test keeps too.
struct Shared(Arc<FakeLane>);

impl Lane for Shared {
    fn kind(&self) -> metrics::Transport {
        self.0.kind()
    }

    fn try_write(&self, msg: &Message) -> std::io::Result<Wrote> {
        self.0.try_write(msg)
    }

    fn blocked(&self) -> bool {
        self.0.blocked.load(Ordering::Acquire)
    }
}

/// The task waits: polls `recv` once, offering the lane; true if it waits.
fn waits(rx: &Receiver, session: &Session) -> bool {
    rx.recv(false, Some(session)).now_or_never().is_none()
}

#[tokio::test]
async fn the_lane_writes_only_while_the_task_waits_with_nothing_queued() {
    let hub = hub();
    let (mut a, rx) = session(&hub, 8);
    a.subscribe("p".into(), None).await.unwrap();
    let lane = FakeLane::new();
    rx.set_lane(Shared(lane.clone()));

    // Not offered yet: queued, as without a lane.
    let m1 = publish(&hub, "p", "1").await;
    let queued = rx.try_recv().expect("queued");
    assert!(queued.id == m1 && a.accept(&queued));
    assert!(lane.wrote().is_empty());

    // Offered: written by the fan-out, nothing queued, counted delivered.
    assert!(waits(&rx, &a));
    let m2 = publish(&hub, "p", "2").await;
    assert_eq!(lane.wrote(), [m2]);
    assert!(rx.try_recv().is_none());
    let sse = hub.metrics.transport(metrics::Transport::Sse);
    assert_eq!(sse.delivered.get(), 1);

    // A full socket: queued, and the task is to write it.
    lane.answer(Answer::Full);
    let m3 = publish(&hub, "p", "3").await;
    assert!(!waits(&rx, &a), "the task is woken for the queued message");
    assert_eq!(rx.try_recv().map(|m| m.id), Some(m3));

    // Claimed by a task that writes: queued, even with room in the socket.
    lane.answer(Answer::All);
    assert!(waits(&rx, &a));
    assert!(rx.claim().is_none());
    let m4 = publish(&hub, "p", "4").await;
    assert_eq!(lane.wrote(), [m2], "no lane write while the task writes");
    assert_eq!(rx.try_recv().map(|m| m.id), Some(m4));

    // Written in part: the rest is the task's, before anything else.
    assert!(waits(&rx, &a));
    lane.answer(Answer::Part(5));
    let m5 = publish(&hub, "p", "5").await;
    assert!(!waits(&rx, &a), "the task is woken for the rest");
    let m6 = publish(&hub, "p", "6").await;
    assert_eq!(
        lane.wrote(),
        [m2, m5],
        "the rest pending: no more lane writes"
    );
    let (rest, skip) = rx.claim().expect("the rest of m5");
    assert_eq!((rest.id, skip), (m5, 5));
    assert_eq!(rx.try_recv().map(|m| m.id), Some(m6));
    assert_eq!(sse.delivered.get(), 1, "a part is not a delivery");
}

#[tokio::test]
async fn the_lane_skips_what_was_sent_and_kicked_connections() {
    let hub = hub();
    let (mut a, rx) = session(&hub, 8);
    let lane = FakeLane::new();
    rx.set_lane(Shared(lane.clone()));
    let old = publish(&hub, "q", "before").await;
    a.subscribe("q".into(), Some(MessageId::ZERO))
        .await
        .unwrap();
    assert_eq!(a.only_sent(), Some(old), "history gave it");
    assert!(waits(&rx, &a));
    // The broker says it again (a Redis catch-up, say): not written twice.
    let again = hub.broker().read("q".into(), None, 10).await.unwrap();
    let msg = again.messages.last().cloned().expect("retained");
    a.shared.push(msg, &hub.metrics, Via::Lane).unwrap();
    assert!(lane.wrote().is_empty() && rx.try_recv().is_none());

    // A transport with half-written bytes of its own keeps the lane closed.
    lane.blocked.store(true, Ordering::Release);
    assert!(waits(&rx, &a));
    let blocked = publish(&hub, "q", "blocked").await;
    assert!(lane.wrote().is_empty());
    assert_eq!(rx.try_recv().map(|m| m.id), Some(blocked));
    lane.blocked.store(false, Ordering::Release);

    // So does a change of subscriptions, until the task offers it again.
    assert!(waits(&rx, &a));
    a.subscribe("other".into(), None).await.unwrap();
    publish(&hub, "q", "two channels").await;
    assert!(lane.wrote().is_empty() && rx.try_recv().is_some());
    assert!(waits(&rx, &a), "two subscriptions: not offered");
    publish(&hub, "q", "still two").await;
    assert!(lane.wrote().is_empty() && rx.try_recv().is_some());

    // A kicked connection gets no lane writes: its task closes it.
    a.shared.kick(Kick::BrokerGap);
    publish(&hub, "q", "after").await;
    assert!(lane.wrote().is_empty());
}

/// Records being woken.
struct Flag(AtomicBool);

impl futures_util::task::ArcWake for Flag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.0.store(true, Ordering::Release);
    }
}

impl Flag {
    fn woken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The task waits, as [`waits`] (offering the lane with `offer`), with a
/// waker that says whether it was woken since.
fn waits_for(rx: &Receiver, session: &Session, offer: bool) -> Arc<Flag> {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = futures_util::task::waker(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let recv = rx.recv(false, offer.then_some(session));
    tokio::pin!(recv);
    assert!(recv.as_mut().poll(&mut cx).is_pending(), "the task waits");
    flag
}

/// Lets spawned tasks (the flushes) run on the test's one thread until
/// `done`, for at most 100 turns.
async fn until(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

/// A connection of a wide channel: its session, receiver, lane and waker.
struct Wide {
    session: Session,
    rx: Receiver,
    lane: Arc<FakeLane>,
    woken: Arc<Flag>,
}

async fn wide(hub: &Arc<Hub>, n: usize) -> Vec<Wide> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let (mut session, rx) = session(hub, 8);
        session.subscribe("wide".into(), None).await.unwrap();
        let lane = FakeLane::new();
        rx.set_lane(Shared(lane.clone()));
        let woken = waits_for(&rx, &session, true);
        conns.push(Wide {
            session,
            rx,
            lane,
            woken,
        });
    }
    conns
}

#[tokio::test]
async fn a_wide_fan_out_is_written_by_flush_tasks_in_slices() {
    let hub = hub();
    // Three slices, and one connection whose task is busy (no lane offered).
    let n = LANE_SLICE * 2 + 3;
    let conns = wide(&hub, n).await;
    let (mut busy, busy_rx) = session(&hub, 8);
    busy.subscribe("wide".into(), None).await.unwrap();
    busy_rx.set_lane(Shared(FakeLane::new()));
    let busy_woken = waits_for(&busy_rx, &busy, false);

    let m1 = publish(&hub, "wide", "1").await;
    assert!(
        conns.iter().all(|c| c.lane.wrote().is_empty()),
        "nothing written inside the fan-out"
    );
    assert!(busy_woken.woken(), "a task without an open lane is woken");
    assert!(until(|| conns.iter().all(|c| c.lane.wrote().len() == 1)).await);
    let m2 = publish(&hub, "wide", "2").await;
    assert!(until(|| conns.iter().all(|c| c.lane.wrote().len() == 2)).await);
    for c in &conns {
        assert_eq!(c.lane.wrote(), [m1, m2], "each one in order, once");
        assert!(c.rx.try_recv().is_none(), "nothing left queued");
        assert!(!c.woken.woken(), "the flush wrote instead of the task");
    }
    let sse = hub.metrics.transport(metrics::Transport::Sse);
    assert_eq!(sse.delivered.get(), 2 * n as u64);
    assert_eq!(busy_rx.try_recv().map(|m| m.id), Some(m1));
    assert_eq!(busy_rx.try_recv().map(|m| m.id), Some(m2));

    // A burst queued before its flush runs is the task's, for one write.
    let conns: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let woken = waits_for(&c.rx, &c.session, true);
            Wide { woken, ..c }
        })
        .collect();
    let m3 = publish(&hub, "wide", "3").await;
    let m4 = publish(&hub, "wide", "4").await;
    assert!(until(|| conns.iter().all(|c| c.woken.woken())).await);
    for c in &conns {
        assert_eq!(c.lane.wrote(), [m1, m2], "no lane write of a burst");
        assert_eq!(c.rx.try_recv().map(|m| m.id), Some(m3));
        assert_eq!(c.rx.try_recv().map(|m| m.id), Some(m4));
    }
}

#[tokio::test]
async fn a_flush_leaves_to_the_task_what_the_lane_cannot_take() {
    let hub = hub();
    let conns = wide(&hub, LANE_FANOUT + 1).await;
    let [claimed, full, part, ..] = &conns[..] else {
        unreachable!()
    };
    full.lane.answer(Answer::Full);
    part.lane.answer(Answer::Part(5));

    let m1 = publish(&hub, "wide", "1").await;
    // Before the flush runs, one task takes its lane back to write.
    assert!(claimed.rx.claim().is_none());
    let last = &conns[conns.len() - 1];
    assert!(until(|| last.lane.wrote() == [m1]).await);

    assert!(
        claimed.lane.wrote().is_empty(),
        "a claimed lane is the task's"
    );
    assert!(claimed.woken.woken());
    assert_eq!(claimed.rx.try_recv().map(|m| m.id), Some(m1));

    assert!(full.lane.wrote().is_empty());
    assert!(full.woken.woken(), "a full socket: the task writes");
    assert_eq!(full.rx.try_recv().map(|m| m.id), Some(m1));

    assert!(
        part.woken.woken(),
        "a part written: the task writes the rest"
    );
    assert_eq!(part.rx.claim().map(|(m, skip)| (m.id, skip)), Some((m1, 5)));
    assert!(part.rx.try_recv().is_none());

    // The others' lanes stay open for the next message.
    let m2 = publish(&hub, "wide", "2").await;
    assert!(until(|| last.lane.wrote() == [m1, m2]).await);
}

#[tokio::test]
async fn a_channel_that_narrows_keeps_the_order_of_a_pending_flush() {
    let hub = hub();
    let mut conns = wide(&hub, LANE_FANOUT + 1).await;
    let m1 = publish(&hub, "wide", "1").await;
    // Before m1's flush runs, the channel becomes narrow: m2 is written by
    // the fan-out itself unless it waits behind m1.
    conns.pop();
    let m2 = publish(&hub, "wide", "2").await;
    assert!(until(|| conns.iter().all(|c| c.woken.woken())).await);
    for c in &conns {
        assert!(c.lane.wrote().is_empty(), "m2 did not overtake m1");
        assert_eq!(c.rx.try_recv().map(|m| m.id), Some(m1));
        assert_eq!(c.rx.try_recv().map(|m| m.id), Some(m2));
    }
}
