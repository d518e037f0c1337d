//! Faults that need the Redis broker (docs/reliability.md, "Faults"), each
//! with real processes on loopback — the built `push-server` binary on
//! `--redis-url` (or Sentinel) and real `redis-server` processes — and each
//! counting what was published-accepted, delivered, lost and duplicated per
//! subscriber:
//!
//! - a push node SIGKILLed: its WebSocket and SSE clients reconnect to the
//!   other node and resume (`since` / `Last-Event-ID`);
//! - Redis paused (SIGSTOP) and resumed (SIGCONT);
//! - Redis killed and restarted (append-only file on);
//! - the Sentinel master killed during publishing.
//!
//! A subscriber is owed every message accepted after it was subscribed
//! (all of them: publishing starts once every subscriber is confirmed).
//! Publish bodies are sequence numbers, so a publish that answered 503 but
//! was applied anyway shows up as delivered-but-not-accepted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::redisprocs::{Redis, SentinelSet};

type Id = (u64, u64);

/// A node (the built binary) on Redis, ready (`/readyz` 200).
async fn node(args: &[&str]) -> (Proc, TestServer) {
    let (p, s) = spawn(args).await;
    wait_ready(&s, true, WAIT).await;
    (p, s)
}

async fn ready(s: &TestServer) -> Option<bool> {
    let r = client().get(s.http("/readyz")).send().await.ok()?;
    Some(r.status() == 200)
}

/// Polls `/readyz` until it is 200 (`want`) or 503; returns how long it took.
async fn wait_ready(s: &TestServer, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if ready(s).await == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{}: /readyz not {} within {within:?}",
            s.addr,
            if want { 200 } else { 503 }
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A client for long-lived streams: no total timeout (reads are bounded
/// one by one instead).
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ws,
    Sse,
}

/// What one subscriber saw, shared with the test while it runs.
#[derive(Debug, Default)]
struct Seen {
    /// Message ids with the publisher's sequence number (the body).
    got: Vec<(Id, u64)>,
    /// Connections that were confirmed (subscribed / SSE 200).
    sessions: usize,
    /// When the last confirmed session began.
    last_session: Option<Instant>,
    /// `reconnect` with reason `broker_gap`.
    gaps: usize,
    /// `recovered:false` (WS) or `event: reset` (SSE) on a resume.
    not_recovered: usize,
    /// Refusals on (re)connecting: error frames, non-200 answers.
    refusals: usize,
}

struct Sub {
    kind: Kind,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sub {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().got.len()
    }
    fn sessions(&self) -> usize {
        self.seen.lock().unwrap().sessions
    }
}

fn done(seen: &Mutex<Seen>, target: &watch::Receiver<Option<Id>>) -> bool {
    let Some(t) = *target.borrow() else {
        return false;
    };
    seen.lock().unwrap().got.iter().any(|(id, _)| *id >= t)
}

fn record(seen: &Mutex<Seen>, envelope: &Value) {
    let id = id_pair(envelope["id"].as_str().expect("message id"));
    let n = envelope["data"].as_u64().unwrap_or(u64::MAX);
    seen.lock().unwrap().got.push((id, n));
}

/// Subscribes to `channel` on `nodes[0]`; whenever the connection ends it
/// reconnects to the next node in turn and resumes after the last message
/// it saw. Runs until it has seen the target id.
fn subscriber(
    kind: Kind,
    nodes: Vec<SocketAddr>,
    channel: &str,
    target: watch::Receiver<Option<Id>>,
) -> Sub {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let channel = channel.to_string();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut at = 0;
            let mut since: Option<String> = None;
            loop {
                match kind {
                    Kind::Ws => ws_session(nodes[at], &channel, &mut since, &seen, &target).await,
                    Kind::Sse => sse_session(nodes[at], &channel, &mut since, &seen, &target).await,
                }
                if done(&seen, &target) {
                    return;
                }
                at = (at + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    Sub { kind, seen, task }
}

async fn ws_session(
    addr: SocketAddr,
    channel: &str,
    since: &mut Option<String>,
    seen: &Mutex<Seen>,
    target: &watch::Receiver<Option<Id>>,
) {
    let connect = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"));
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(WAIT, connect).await else {
        return;
    };
    let mut sub = json!({"type": "subscribe", "channel": channel});
    if let Some(id) = since.as_ref() {
        sub["since"] = id.clone().into();
    }
    if ws.send(WsMsg::Text(sub.to_string().into())).await.is_err() {
        return;
    }
    loop {
        if done(seen, target) {
            return;
        }
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await else {
            continue;
        };
        let t = match next {
            Some(Ok(WsMsg::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => return,
        };
        let v: Value = serde_json::from_str(&t).expect("json frame");
        match v["type"].as_str() {
            Some("subscribed") => {
                let mut s = seen.lock().unwrap();
                s.sessions += 1;
                s.last_session = Some(Instant::now());
                if v["recovered"] == false {
                    s.not_recovered += 1;
                }
            }
            Some("message") => {
                record(seen, &v);
                *since = v["id"].as_str().map(str::to_string);
            }
            Some("reconnect") => {
                if v["reason"] == "broker_gap" {
                    seen.lock().unwrap().gaps += 1;
                }
                return;
            }
            Some("error") => {
                seen.lock().unwrap().refusals += 1;
                return;
            }
            _ => {}
        }
    }
}

async fn sse_session(
    addr: SocketAddr,
    channel: &str,
    cursor: &mut Option<String>,
    seen: &Mutex<Seen>,
    target: &watch::Receiver<Option<Id>>,
) {
    let mut req = stream_client().get(format!("http://{addr}/sse?channels={channel}"));
    if let Some(c) = cursor.as_ref() {
        req = req.header("last-event-id", c.as_str());
    }
    let Ok(Ok(resp)) = tokio::time::timeout(WAIT, req.send()).await else {
        return;
    };
    if resp.status() != 200 {
        seen.lock().unwrap().refusals += 1;
        return;
    }
    // The stream is subscribed before the answer starts.
    {
        let mut s = seen.lock().unwrap();
        s.sessions += 1;
        s.last_session = Some(Instant::now());
    }
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    loop {
        if done(seen, target) {
            return;
        }
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), body.next()).await else {
            continue;
        };
        let Some(Ok(chunk)) = next else {
            return;
        };
        buf.push_str(std::str::from_utf8(&chunk).expect("utf8"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    *cursor = Some(id.to_string());
                } else if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            match event.as_deref() {
                Some("message") => record(seen, &serde_json::from_str(&data).expect("envelope")),
                Some("reset") => seen.lock().unwrap().not_recovered += 1,
                Some("reconnect") => {
                    if data.contains("broker_gap") {
                        seen.lock().unwrap().gaps += 1;
                    }
                    return;
                }
                _ => {}
            }
        }
    }
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Published {
    accepted: Vec<(Id, u64)>,
    /// (sequence number, status; 0 = no HTTP answer).
    refused: Vec<(u64, u16)>,
    /// The slowest answer of all, and of the refusals.
    slowest: Duration,
    slowest_refusal: Duration,
}

/// Publishes 1, 2, 3, … to `channel` on `s` every 5 ms until stopped.
fn publisher(
    s: &TestServer,
    channel: &str,
    stop: CancellationToken,
) -> (Arc<Mutex<Published>>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(Mutex::new(Published::default()));
    let url = s.http(&format!("/api/v1/channels/{channel}/messages"));
    let task = {
        let stats = stats.clone();
        tokio::spawn(async move {
            // Longer than any bound asserted, so a hang is measured, not cut.
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let started = Instant::now();
                let resp = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(n.to_string())
                    .send()
                    .await;
                let status = resp.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                let id = match resp {
                    Ok(r) if status == 200 => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(id_pair)),
                    Ok(r) => {
                        let v: Value = r.json().await.unwrap_or_default();
                        assert!(
                            status == 503 && v["error"]["code"] == "broker_unavailable",
                            "publish answered {status} {v}"
                        );
                        None
                    }
                    Err(_) => None,
                };
                let took = started.elapsed();
                {
                    let mut st = stats.lock().unwrap();
                    st.slowest = st.slowest.max(took);
                    match id {
                        Some(id) => st.accepted.push((id, n)),
                        None => {
                            st.refused.push((n, status));
                            st.slowest_refusal = st.slowest_refusal.max(took);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    (stats, task)
}

/// One subscriber's row of the table.
#[derive(Debug)]
struct Row {
    kind: Kind,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    /// Delivered though the publish was answered 503.
    refused_but_delivered: usize,
    sessions: usize,
    gaps: usize,
    not_recovered: usize,
}

fn tally(name: &str, published: &Published, subs: &[Sub]) -> Vec<Row> {
    let accepted: HashSet<Id> = published.accepted.iter().map(|(id, _)| *id).collect();
    let refused: HashSet<u64> = published.refused.iter().map(|(n, _)| *n).collect();
    let mut rows = Vec::new();
    for sub in subs {
        let s = sub.seen.lock().unwrap();
        let ids: HashSet<Id> = s.got.iter().map(|(id, _)| *id).collect();
        rows.push(Row {
            kind: sub.kind,
            delivered: accepted.intersection(&ids).count(),
            lost: accepted.difference(&ids).count(),
            duplicated: s.got.len() - ids.len(),
            out_of_order: s.got.windows(2).filter(|w| w[0].0 >= w[1].0).count(),
            refused_but_delivered: s.got.iter().filter(|(_, n)| refused.contains(n)).count(),
            sessions: s.sessions,
            gaps: s.gaps,
            not_recovered: s.not_recovered,
        });
    }
    eprintln!(
        "{name}: accepted {}, refused {} (statuses {:?}), slowest publish answer {:?} (slowest refusal {:?})",
        published.accepted.len(),
        published.refused.len(),
        published
            .refused
            .iter()
            .map(|(_, s)| *s)
            .collect::<std::collections::BTreeSet<_>>(),
        published.slowest,
        published.slowest_refusal,
    );
    for (i, r) in rows.iter().enumerate() {
        eprintln!(
            "  subscriber {i} ({:?}): delivered {}, lost {}, duplicated {}, out of order {}, \
             answered 503 but delivered {}; sessions {}, broker_gap {}, not recovered {}",
            r.kind,
            r.delivered,
            r.lost,
            r.duplicated,
            r.out_of_order,
            r.refused_but_delivered,
            r.sessions,
            r.gaps,
            r.not_recovered
        );
    }
    rows
}

/// 2 WebSocket + 2 SSE subscribers of `channel` on `nodes[0]`, confirmed.
async fn subscribers(
    nodes: &[SocketAddr],
    channel: &str,
    target: &watch::Receiver<Option<Id>>,
) -> Vec<Sub> {
    let subs: Vec<Sub> = [Kind::Ws, Kind::Ws, Kind::Sse, Kind::Sse]
        .into_iter()
        .map(|k| subscriber(k, nodes.to_vec(), channel, target.clone()))
        .collect();
    wait_all(&subs, "every subscriber confirmed", |s| s.sessions() >= 1).await;
    subs
}

async fn wait_all(subs: &[Sub], what: &str, f: impl Fn(&Sub) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !subs.iter().all(&f) {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the publisher has `n` more accepted than now.
async fn accepted_more(p: &Mutex<Published>, n: usize, within: Duration) {
    let want = p.lock().unwrap().accepted.len() + n;
    let deadline = Instant::now() + within;
    while p.lock().unwrap().accepted.len() < want {
        assert!(Instant::now() < deadline, "publishing did not go on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the publisher, sets the target to the last accepted id and waits
/// for every subscriber to reach it (or `WAIT`, then counts what it has).
async fn finish(
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    published: &Mutex<Published>,
    target: watch::Sender<Option<Id>>,
    subs: &[Sub],
) {
    stop.cancel();
    task.await.expect("publisher");
    let last = published
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(id, _)| *id)
        .max();
    target.send(last).unwrap();
    let deadline = Instant::now() + WAIT;
    for sub in subs {
        while !sub.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sub.task.abort();
    }
}

fn assert_clean(rows: &[Row]) {
    for (i, r) in rows.iter().enumerate() {
        assert!(r.delivered > 0, "subscriber {i} got messages: {r:?}");
        assert_eq!(
            (r.lost, r.duplicated, r.out_of_order),
            (0, 0, 0),
            "subscriber {i}: lost / duplicated / out of order: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_sigkill_clients_resume_on_the_other_node() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let (mut pa, a) = node(&["--redis-url", &url]).await;
    let (_pb, b) = node(&["--redis-url", &url]).await;
    let (target_tx, target) = watch::channel(None);
    let subs = subscribers(&[a.addr, b.addr], "k", &target).await;
    let stop = CancellationToken::new();
    let (published, task) = publisher(&b, "k", stop.clone());
    wait_all(&subs, "20 messages each on A", |s| s.count() >= 20).await;

    let killed = Instant::now();
    pa.0.kill().expect("SIGKILL node A");
    let _ = pa.0.wait();
    let counts: Vec<usize> = subs.iter().map(Sub::count).collect();
    wait_all(&subs, "resumed on B", |s| s.sessions() >= 2).await;
    let resumed_after = subs
        .iter()
        .filter_map(|s| s.seen.lock().unwrap().last_session)
        .max()
        .unwrap()
        - killed;
    // Publishing goes on meanwhile; 50 more delivered to each after the kill.
    let deadline = Instant::now() + WAIT;
    while subs.iter().zip(&counts).any(|(s, c)| s.count() < c + 50) {
        assert!(Instant::now() < deadline, "messages after the resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish(stop, task, &published, target_tx, &subs).await;
    let p = published.lock().unwrap();
    let rows = tally("node SIGKILL", &p, &subs);
    eprintln!("  every subscriber resumed on B within {resumed_after:?} of the SIGKILL");
    assert!(p.refused.is_empty(), "B refused publishes: {:?}", p.refused);
    assert_clean(&rows);
    for r in &rows {
        assert_eq!((r.sessions, r.not_recovered, r.gaps), (2, 0, 0), "{r:?}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// SIGKILL, then a new redis-server on the same port and directory.
    Restart,
}

/// Subscribers on node A, a publisher on node B; Redis goes away while
/// publishing and comes back.
async fn redis_outage(outage: Outage) {
    // Append-only file (fsync always): a restarted Redis keeps history.
    let mut redis = Redis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let url = redis.url();
    let (_pa, a) = node(&["--redis-url", &url]).await;
    let (_pb, b) = node(&["--redis-url", &url]).await;
    let (target_tx, target) = watch::channel(None);
    let subs = subscribers(&[a.addr], "o", &target).await;
    let stop = CancellationToken::new();
    let (published, task) = publisher(&b, "o", stop.clone());
    wait_all(&subs, "20 messages each", |s| s.count() >= 20).await;
    assert_eq!(metric(&a, "push_broker_up").await, 1.0);

    let began = Instant::now();
    match outage {
        Outage::Pause => signal(redis.pid(), "STOP"),
        Outage::Restart => redis.kill().await,
    }
    let refused_before = published.lock().unwrap().refused.len();
    // Readiness and the gauge follow on both nodes.
    let a_down = wait_ready(&a, false, WAIT).await;
    let b_down = wait_ready(&b, false, WAIT).await;
    assert_eq!(metric(&a, "push_broker_up").await, 0.0);
    assert_eq!(metric(&b, "push_broker_up").await, 0.0);
    // At least 3 publishes answered during the outage.
    let deadline = Instant::now() + WAIT;
    while published.lock().unwrap().refused.len() < refused_before + 3 {
        assert!(
            Instant::now() < deadline,
            "publishes answered during the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lasted = began.elapsed();
    let back = Instant::now();
    match outage {
        Outage::Pause => signal(redis.pid(), "CONT"),
        Outage::Restart => redis.restart().await,
    }
    let a_up = wait_ready(&a, true, WAIT).await;
    let b_up = wait_ready(&b, true, WAIT).await;
    assert_eq!(metric(&a, "push_broker_up").await, 1.0);
    accepted_more(&published, 50, WAIT).await;
    let recovered = back.elapsed();
    finish(stop, task, &published, target_tx, &subs).await;
    let p = published.lock().unwrap();
    let rows = tally(&format!("Redis {outage:?}"), &p, &subs);
    eprintln!(
        "  outage {lasted:?}; /readyz 503 after {a_down:?} (A) {b_down:?} (B); \
         200 again {a_up:?} (A) {b_up:?} (B) after Redis was back; 50 more accepted {recovered:?} after"
    );
    assert!(!p.refused.is_empty(), "some publishes hit the outage");
    // The bound: 2 s command timeout (+1 s connect timeout on a new connection).
    assert!(
        p.slowest < Duration::from_secs(4),
        "a publish took {:?}",
        p.slowest
    );
    assert_clean(&rows);
    for r in &rows {
        assert_eq!((r.gaps, r.not_recovered), (0, 0), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_publishes_503_in_bounded_time_then_catch_up() {
    redis_outage(Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_loses_nothing_accepted() {
    redis_outage(Outage::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_master_killed_during_publishing() {
    let mut set = SentinelSet::start().await;
    let addrs = set.sentinel_addrs();
    let args = [
        "--redis-sentinel",
        addrs.as_str(),
        "--redis-master-name",
        "mymaster",
    ];
    let (_pa, a) = node(&args).await;
    let (_pb, b) = node(&args).await;
    let (target_tx, target) = watch::channel(None);
    let subs = subscribers(&[a.addr], "f", &target).await;
    let stop = CancellationToken::new();
    let (published, task) = publisher(&b, "f", stop.clone());
    wait_all(&subs, "20 messages each", |s| s.count() >= 20).await;

    let killed = Instant::now();
    set.kill_master_and_await_promotion().await;
    let promoted = killed.elapsed();
    wait_ready(&a, true, WAIT).await;
    wait_ready(&b, true, WAIT).await;
    accepted_more(&published, 50, WAIT).await;
    let serving = killed.elapsed();
    finish(stop, task, &published, target_tx, &subs).await;
    let p = published.lock().unwrap();
    let rows = tally("Sentinel master SIGKILL", &p, &subs);
    eprintln!("  promoted {promoted:?} after the kill; 50 more accepted {serving:?} after");
    assert!(
        p.slowest < Duration::from_secs(4),
        "a publish took {:?}",
        p.slowest
    );
    // Replication is asynchronous: a message the old master acknowledged
    // but did not pass on before dying can be lost (docs/brokers.md). Such a
    // loss must be the only kind: no duplicate, no disorder, and every loss
    // acknowledged within the last moments before the kill.
    for (i, r) in rows.iter().enumerate() {
        assert!(r.delivered > 0, "subscriber {i}: {r:?}");
        assert_eq!(
            (r.duplicated, r.out_of_order),
            (0, 0),
            "subscriber {i}: {r:?}"
        );
    }
}
