//! Unit tests of the connection core under Tokio's paused time: a mock
//! transport records what the core writes, and when.

use std::sync::Mutex;

use tokio::sync::mpsc;

use super::*;
use crate::auth::Grants;

/// What the core asked the transport to write.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Frame(serde_json::Value),
    Messages(Vec<MessageId>),
    Heartbeat,
    Close(Disconnect),
}

type Log = Arc<Mutex<Vec<(Duration, Out)>>>;

struct Mock {
    log: Log,
    start: Instant,
    inbox: mpsc::UnboundedReceiver<Received>,
}

impl Mock {
    fn push(&self, out: Out) {
        self.log.lock().unwrap().push((self.start.elapsed(), out));
    }
}

impl Transport for Mock {
    const KIND: metrics::Transport = metrics::Transport::Ws;

    fn heartbeat_period(config: &Config) -> Duration {
        config.heartbeat
    }

    fn idle_limit(config: &Config) -> Option<Duration> {
        Some(config.idle_timeout)
    }

    async fn write_messages(&mut self, batch: &[Arc<Message>]) -> Result<(), Gone> {
        self.push(Out::Messages(batch.iter().map(|m| m.id).collect()));
        Ok(())
    }

    async fn write_frame(&mut self, text: String) -> Result<(), Gone> {
        self.push(Out::Frame(serde_json::from_str(&text).unwrap()));
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), Gone> {
        self.push(Out::Heartbeat);
        Ok(())
    }

    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Received> {
        match self.inbox.poll_recv(cx) {
            std::task::Poll::Ready(Some(r)) => std::task::Poll::Ready(r),
            // The test dropped its sender: the client stays silent.
            _ => std::task::Poll::Pending,
        }
    }

    async fn close(&mut self, why: Disconnect, _retry_ms: u64) {
        self.push(Out::Close(why));
    }
}

fn node(args: &[&str]) -> Arc<Node> {
    let mut argv = vec!["push-server"];
    argv.extend_from_slice(args);
    Node::new(Config::load_from(argv).unwrap()).unwrap()
}

/// A running connection: its log, its inbox, its task.
struct Running {
    log: Log,
    tx: mpsc::UnboundedSender<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(node: &Arc<Node>, principal: Principal, channels: &[&str]) -> Running {
        let permit = node
            .admit(metrics::Transport::Ws, [127, 0, 0, 1].into())
            .unwrap();
        let core = Core::new(node.clone(), principal, permit);
        let (tx, inbox) = mpsc::unbounded_channel();
        let log = Log::default();
        let mock = Mock {
            log: log.clone(),
            start: Instant::now(),
            inbox,
        };
        let channels = channels.iter().map(|c| Channel::from(*c)).collect();
        let task = tokio::spawn(core.run(mock, true, channels));
        Running { log, tx, task }
    }

    fn send(&self, text: &str) {
        self.tx.send(Received::Text(text.into())).unwrap();
    }

    /// Waits (in paused time) until the connection ended; its log.
    async fn ended(self) -> Vec<(Duration, Out)> {
        tokio::time::timeout(Duration::from_secs(3600), self.task)
            .await
            .expect("the connection ends")
            .unwrap();
        self.log.lock().unwrap().clone()
    }

    fn outs(&self) -> Vec<Out> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn last(log: &[(Duration, Out)]) -> (Duration, Out) {
    log.last().cloned().unwrap()
}

#[tokio::test(start_paused = true)]
async fn welcome_heartbeats_then_idle_timeout() {
    let node = node(&["--heartbeat", "2s", "--idle-timeout", "5s"]);
    let log = Running::start(&node, Principal::anonymous(), &[])
        .ended()
        .await;
    let Out::Frame(welcome) = &log[0].1 else {
        panic!("{log:?}")
    };
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_ms"], 2000);
    assert_eq!(
        log[1..],
        [
            (secs(2), Out::Heartbeat),
            (secs(4), Out::Heartbeat),
            (secs(5), Out::Close(Disconnect::IdleTimeout)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn activity_postpones_the_idle_timeout() {
    let node = node(&["--heartbeat", "2s", "--idle-timeout", "5s"]);
    let conn = Running::start(&node, Principal::anonymous(), &[]);
    tokio::time::sleep(secs(3)).await;
    conn.tx.send(Received::Activity).unwrap();
    let log = conn.ended().await;
    assert_eq!(last(&log), (secs(8), Out::Close(Disconnect::IdleTimeout)));
}

#[tokio::test(start_paused = true)]
async fn lifetime_asks_to_reconnect_within_ten_percent() {
    let node = node(&[
        "--heartbeat",
        "25s",
        "--idle-timeout",
        "1h",
        "--max-connection-lifetime",
        "100s",
    ]);
    let log = Running::start(&node, Principal::anonymous(), &[])
        .ended()
        .await;
    let (at, out) = last(&log);
    assert_eq!(out, Out::Close(Disconnect::MaxLifetime));
    assert!(at >= secs(90) && at <= secs(110), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_spreads_reconnects_over_the_drain_period() {
    let node = node(&[
        "--heartbeat",
        "25s",
        "--idle-timeout",
        "1h",
        "--drain-period",
        "10s",
    ]);
    let conn = Running::start(&node, Principal::anonymous(), &[]);
    tokio::time::sleep(secs(1)).await;
    node.start_drain();
    let (at, out) = last(&conn.ended().await);
    assert_eq!(out, Out::Close(Disconnect::Draining));
    assert!(at >= secs(1) && at <= secs(9), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn token_expiry_asks_to_reconnect() {
    let node = node(&["--heartbeat", "25s", "--idle-timeout", "1h"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let principal = Principal {
        user: Some("ann".into()),
        subscribe: Grants::All,
        publish: Grants::All,
        expires: Some(now + 30),
    };
    let (at, out) = last(&Running::start(&node, principal, &[]).ended().await);
    assert_eq!(out, Out::Close(Disconnect::TokenExpired));
    assert!(at >= secs(29) && at <= secs(30), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn queue_overflow_is_a_slow_consumer() {
    let node = node(&["--outbound-queue", "2"]);
    let conn = Running::start(&node, Principal::anonymous(), &["c"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // No await point yields between the publishes: the connection's task
    // does not run, and its queue of 2 overflows.
    for i in 0..3 {
        let data = serde_json::value::RawValue::from_string(i.to_string()).unwrap();
        node.publish(&Principal::anonymous(), "c", Data::Json(&data))
            .await
            .unwrap();
    }
    let log = conn.ended().await;
    assert_eq!(last(&log).1, Out::Close(Disconnect::SlowConsumer));
    assert_eq!(node.metrics.slow_consumer_disconnects.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn messages_are_batched_and_delivered_once() {
    let node = node(&[]);
    let conn = Running::start(&node, Principal::anonymous(), &["c"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let data = serde_json::value::RawValue::from_string(i.to_string()).unwrap();
        ids.push(
            node.publish(&Principal::anonymous(), "c", Data::Json(&data))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let outs = conn.outs();
    assert_eq!(outs.last(), Some(&Out::Messages(ids)), "{outs:?}");
    assert_eq!(node.metrics.ws.delivered.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn acks_hold_the_window_redeliver_and_give_up() {
    let node = node(&[
        "--ack-window",
        "1",
        "--ack-timeout",
        "5s",
        "--max-redeliveries",
        "1",
        "--heartbeat",
        "25s",
        "--idle-timeout",
        "1h",
    ]);
    let conn = Running::start(&node, Principal::anonymous(), &[]);
    conn.send(r#"{"type":"subscribe","channel":"c","ack":true}"#);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let data = serde_json::value::RawValue::from_string(i.to_string()).unwrap();
        ids.push(
            node.publish(&Principal::anonymous(), "c", Data::Json(&data))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(conn.outs().last(), Some(&Out::Messages(vec![ids[0]])));
    conn.send(&format!(
        r#"{{"type":"ack","channel":"c","id":"{}"}}"#,
        ids[0]
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(conn.outs().last(), Some(&Out::Messages(vec![ids[1]])));
    // Not acked: sent again after 5 s, given up after 10 s.
    tokio::time::sleep(secs(5)).await;
    assert_eq!(conn.outs().last(), Some(&Out::Messages(vec![ids[1]])));
    tokio::time::sleep(secs(5)).await;
    let Some(Out::Frame(e)) = conn.outs().last().cloned() else {
        panic!("{:?}", conn.outs())
    };
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("ack_timeout"), Some(ids[1].to_string().as_str()))
    );
    assert_eq!(node.metrics.redeliveries.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn frames_take_the_node_paths() {
    let node = node(&["--publish-rate-limit", "1"]);
    let conn = Running::start(&node, Principal::anonymous(), &[]);
    for frame in [
        r#"{"type":"ping"}"#,
        r#"{"type":"publish","channel":"c","data":{"a": 1}}"#,
        r#"{"type":"publish","channel":"c","data":2}"#,
        r#"{"type":"unsubscribe","channel":"c"}"#,
        r#"{"type":"nope"}"#,
    ] {
        conn.send(frame);
    }
    conn.tx.send(Received::Binary).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got: Vec<String> = conn
        .outs()
        .iter()
        .skip(1)
        .map(|o| match o {
            Out::Frame(f) => f["code"]
                .as_str()
                .or(f["type"].as_str())
                .unwrap()
                .to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            "pong",
            "published",
            "rate_limited",
            "not_subscribed",
            "invalid_frame",
            "invalid_frame"
        ]
    );
    assert_eq!(node.metrics.published.get(), 1);
    conn.tx.send(Received::Gone).unwrap();
    let log = conn.ended().await;
    assert!(
        !log.iter().any(|(_, o)| matches!(o, Out::Close(_))),
        "gone: no goodbye"
    );
}
