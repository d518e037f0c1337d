//! A backend's pipelined publishes on one keep-alive connection, on Redis:
//! published concurrently, answered in order, a channel's messages in order
//! (docs/protocol.md, "Keep-alive and pipelining").
//!
//! A proxy between the node and Redis holds Redis's replies back, so the
//! test sees how many publishes the node sent before any was answered: one
//! at a time would be a Redis round trip per request, the pauses of the
//! personal-channel Redis row in docs/benchmarks.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::common::{history_messages, read_answer, TestServer, WAIT};
use crate::nodes::node;
use crate::procs::Redis;

/// A TCP proxy to Redis that counts the publish scripts (`EVALSHA`) sent
/// through it and forwards Redis's replies only while open.
struct HoldingProxy {
    port: u16,
    publishes: Arc<AtomicUsize>,
    sent: Arc<Notify>,
    open: watch::Sender<bool>,
}

impl HoldingProxy {
    async fn start(redis_port: u16) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let publishes = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Notify::new());
        let (open, open_rx) = watch::channel(true);
        let (count, notify) = (publishes.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((node_side, _)) = listener.accept().await {
                let redis_side = TcpStream::connect(("127.0.0.1", redis_port))
                    .await
                    .expect("connect to redis");
                let (mut from_node, mut to_node) = node_side.into_split();
                let (mut from_redis, mut to_redis) = redis_side.into_split();
                let (count, notify) = (count.clone(), notify.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    // The end of the last read, for a word split across reads.
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n) = from_node.read(&mut buf).await {
                        if n == 0 || to_redis.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        let found = tail.windows(7).filter(|w| w == b"EVALSHA").count();
                        tail.drain(..tail.len().saturating_sub(6));
                        count.fetch_add(found, Ordering::SeqCst);
                        notify.notify_waiters();
                    }
                });
                let mut open = open_rx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = from_redis.read(&mut buf).await {
                        if n == 0 || open.wait_for(|o| *o).await.is_err() {
                            return;
                        }
                        if to_node.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HoldingProxy {
            port,
            publishes,
            sent,
            open,
        }
    }

    /// Waits until `n` publish scripts have passed since `from`.
    async fn wait_publishes(&self, from: usize, n: usize) {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.sent.notified();
                if self.publishes.load(Ordering::SeqCst) >= from + n {
                    return;
                }
                notified.await;
            }
        })
        .await;
        let got = self.publishes.load(Ordering::SeqCst) - from;
        assert!(
            waited.is_ok(),
            "{got} of {n} pipelined publishes reached Redis before any was answered"
        );
    }
}

fn publish_request(channel: &str, body: &str) -> String {
    format!(
        "POST /api/v1/channels/{channel}/messages HTTP/1.1\r\nhost: push\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Twenty pipelined publishes to twenty channels, then two more to the
/// first two channels: the twenty are all sent to Redis while none is
/// answered; every answer comes in request order, and each of the first two
/// channels keeps its messages in the order they were sent.
#[tokio::test]
async fn pipelined_publishes_to_distinct_channels_are_in_flight_together() {
    let redis = Redis::start(&[]).await;
    let proxy = HoldingProxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let s = node(&["--redis-url", &url]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut buf = Vec::new();
    // The script is loaded and the connection is up before the hold.
    tcp.write_all(publish_request("warm", "0").as_bytes())
        .await
        .expect("warm-up");
    assert_eq!(read_answer(&mut tcp, &mut buf, "warm-up").await.status, 200);

    let n = 20;
    let mut requests: Vec<(String, usize)> = (0..n).map(|i| (format!("p{i}"), i)).collect();
    requests.extend([("p0".to_string(), n), ("p1".to_string(), n + 1)]);
    let before = proxy.publishes.load(Ordering::SeqCst);
    proxy.open.send_replace(false);
    let all: String = requests
        .iter()
        .map(|(channel, i)| publish_request(channel, &i.to_string()))
        .collect();
    tcp.write_all(all.as_bytes()).await.expect("requests");
    proxy.wait_publishes(before, n).await;
    proxy.open.send_replace(true);

    for (channel, i) in &requests {
        let a = read_answer(&mut tcp, &mut buf, &format!("answer {i}")).await;
        assert_eq!(a.status, 200, "{i}: {}", String::from_utf8_lossy(&a.body));
        let v: Value = serde_json::from_slice(&a.body).expect("JSON body");
        assert_eq!(v["channel"], channel.as_str(), "answer {i} out of order");
    }
    for i in 0..n {
        let channel = format!("p{i}");
        let mut want = vec![i];
        want.extend(
            requests[n..]
                .iter()
                .filter(|(c, _)| *c == channel)
                .map(|(_, j)| *j),
        );
        assert_eq!(
            history_data(&s, &channel).await,
            want,
            "{channel}: history in publish order"
        );
    }
}

/// The data of a channel's history, oldest first (the bodies are numbers).
async fn history_data(s: &TestServer, channel: &str) -> Vec<usize> {
    history_messages(s, channel)
        .await
        .iter()
        .map(|m| m["data"].as_u64().expect("number") as usize)
        .collect()
}

/// Refused requests inside a pipeline that waits for Redis: each is answered
/// in its place with its error (400 `invalid_json`, 400 `invalid_channel`),
/// and the publishes around it, sent to Redis together, are applied once.
#[tokio::test]
async fn refusals_in_a_pipelined_batch_are_answered_in_their_place() {
    let redis = Redis::start(&[]).await;
    let proxy = HoldingProxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let s = node(&["--redis-url", &url]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut buf = Vec::new();
    tcp.write_all(publish_request("warm", "0").as_bytes())
        .await
        .expect("warm-up");
    assert_eq!(read_answer(&mut tcp, &mut buf, "warm-up").await.status, 200);

    let requests = [
        ("r1", "1", 200, None),
        ("r2", "{", 400, Some("invalid_json")),
        ("r3", "3", 200, None),
        ("r!4", "4", 400, Some("invalid_channel")),
        ("r5", "5", 200, None),
    ];
    let before = proxy.publishes.load(Ordering::SeqCst);
    proxy.open.send_replace(false);
    let all: String = requests
        .iter()
        .map(|(channel, body, _, _)| publish_request(channel, body))
        .collect();
    tcp.write_all(all.as_bytes()).await.expect("requests");
    proxy.wait_publishes(before, 3).await;
    proxy.open.send_replace(true);

    for (channel, _, status, code) in requests {
        let a = read_answer(&mut tcp, &mut buf, channel).await;
        assert_eq!(
            a.status,
            status,
            "{channel}: {}",
            String::from_utf8_lossy(&a.body)
        );
        match code {
            Some(code) => assert_eq!(a.code(), code, "{channel}"),
            None => {
                let v: Value = serde_json::from_slice(&a.body).expect("JSON body");
                assert_eq!(v["channel"], channel, "answer out of order");
            }
        }
    }
    for (channel, want) in [
        ("r1", vec![1]),
        ("r2", vec![]),
        ("r3", vec![3]),
        ("r5", vec![5]),
    ] {
        assert_eq!(history_data(&s, channel).await, want, "{channel}");
    }
}
