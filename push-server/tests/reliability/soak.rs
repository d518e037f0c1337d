//! Soak: connection churn plus steady publishing against one node (the
//! built binary, memory broker), or two nodes on one Redis, sampling each
//! node's resident memory, open file descriptors, threads and
//! connection/subscription gauges over time. Fails if any of them grows
//! without bound.
//!
//! `make soak DURATION=10m` runs the one-node soak for as long as asked
//! (`PUSH_SOAK_DURATION`, default 60s); `make test-reliability` runs 60 s;
//! `make soak-redis DURATION=…` runs the two-node one. The samples are
//! written to `target/soak/soak-<secs>s.csv` (`soak-redis-<secs>s.csv`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::common::*;
use crate::redisprocs::Redis;

const CHANNELS: usize = 10;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    stats: ProcStats,
    connections: f64,
    subscriptions: f64,
}

async fn sample(s: &TestServer, pid: u32, start: Instant) -> Sample {
    let text = metrics_text(s).await;
    let m = |n: &str| metric_in(&text, n).unwrap_or(f64::NAN);
    Sample {
        at: start.elapsed().as_secs_f64(),
        stats: proc_stats(pid),
        connections: m("push_connections{transport=\"ws\"}")
            + m("push_connections{transport=\"sse\"}"),
        subscriptions: m("push_subscriptions"),
    }
}

/// A long-lived WebSocket subscriber that reconnects (resuming with
/// `since`) whenever the server closes it; counts messages and order errors.
async fn steady_subscriber(
    s: Arc<TestServer>,
    channel: String,
    stop: Arc<AtomicBool>,
    got: Arc<AtomicU64>,
    disorder: Arc<AtomicU64>,
) {
    let mut last: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(s.ws_url("/ws")).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut sub = serde_json::json!({"type": "subscribe", "channel": channel});
        if let Some(id) = &last {
            sub["since"] = id.clone().into();
        }
        use futures_util::SinkExt;
        if ws.send(WsMsg::Text(sub.to_string().into())).await.is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
            let Ok(next) = next else { continue };
            let Some(Ok(WsMsg::Text(t))) = next else {
                if let Some(Ok(_)) = next {
                    continue;
                }
                break;
            };
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            if v["type"] == "message" {
                let id = v["id"].as_str().unwrap_or("0-0").to_string();
                if last.as_deref().is_some_and(|l| id_pair(l) >= id_pair(&id)) {
                    disorder.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(id);
                got.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Opens a short-lived connection of some kind, reads a little, drops it.
async fn churn(s: Arc<TestServer>, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let channel = format!("soak-{}", i % CHANNELS);
        if i.is_multiple_of(2) {
            if let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(s.ws_url(&format!("/ws?channels={channel}"))).await
            {
                let _ = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
                if i.is_multiple_of(4) {
                    let _ = ws.close(None).await;
                }
            }
        } else {
            let req = format!("GET /sse?channels={channel} HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = raw_http(s.addr, req.as_bytes()).await;
        }
        opened.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publisher(s: Arc<TestServer>, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let c = client();
    let body = format!("{{\"pad\":\"{}\"}}", "p".repeat(200));
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let url = s.http(&format!("/api/v1/channels/soak-{}/messages", i % CHANNELS));
        if let Ok(r) = c
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            if r.status() == 200 {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by `make test-reliability` (60 s) and `make soak DURATION=…`"]
async fn soak_one_node() {
    soak(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by `make soak-redis DURATION=…`"]
async fn soak_two_nodes_redis() {
    soak(true).await;
}

/// Polls `/readyz` until 200 (a node on Redis subscribes only when ready).
async fn wait_ready(s: &TestServer) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = client().get(s.http("/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{} not ready", s.addr);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One node (memory broker), or two nodes on one Redis: steady subscribers
/// of every channel on every node, churn on every node, and each publisher
/// on another node than the one before.
async fn soak(redis: bool) {
    let secs = std::env::var("PUSH_SOAK_DURATION")
        .ok()
        .map(|d| push_server::config::parse_duration(&d).expect("PUSH_SOAK_DURATION: e.g. 10m"))
        .unwrap_or(Duration::from_secs(60))
        .as_secs()
        .max(8);
    let redis_proc = if redis {
        Some(Redis::start(&[]).await)
    } else {
        None
    };
    let url = redis_proc.as_ref().map(Redis::url);
    let mut args = vec![
        "--heartbeat",
        "2s",
        "--idle-timeout",
        "5s",
        "--max-connection-lifetime",
        "20s",
    ];
    if let Some(url) = &url {
        args.extend(["--redis-url", url.as_str()]);
    }
    let mut procs = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..if redis { 2 } else { 1 } {
        let (p, s) = spawn(&args).await;
        wait_ready(&s).await;
        procs.push(p);
        nodes.push(Arc::new(s));
    }
    let n = nodes.len();
    let stop = Arc::new(AtomicBool::new(false));
    let (got, disorder, opened, sent) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        tasks.push(tokio::spawn(steady_subscriber(
            nodes[(i / CHANNELS) % n].clone(),
            format!("soak-{}", i % CHANNELS),
            stop.clone(),
            got.clone(),
            disorder.clone(),
        )));
    }
    for i in 0..4 {
        tasks.push(tokio::spawn(churn(
            nodes[i % n].clone(),
            stop.clone(),
            opened.clone(),
        )));
    }
    for i in 0..2 {
        tasks.push(tokio::spawn(publisher(
            nodes[(i + 1) % n].clone(),
            stop.clone(),
            sent.clone(),
        )));
    }

    let start = Instant::now();
    let every = Duration::from_secs((secs / 30).clamp(1, 30));
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
    let mut redis_rss = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(every).await;
        for (k, (s, p)) in nodes.iter().zip(&procs).enumerate() {
            samples[k].push(sample(s, p.pid(), start).await);
        }
        if let Some(r) = &redis_proc {
            redis_rss.push(proc_stats(r.pid()).rss_kib);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(WAIT, t).await;
    }
    for s in &nodes {
        wait_no_connections(s, Duration::from_secs(15))
            .await
            .expect("every connection closed after the soak");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ends = Vec::new();
    for (s, p) in nodes.iter().zip(&procs) {
        ends.push(sample(s, p.pid(), start).await);
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    let _ = std::fs::create_dir_all(&dir);
    let mut csv = String::from("node,seconds,rss_kib,fds,threads,connections,subscriptions\n");
    for (k, (node_samples, end)) in samples.iter().zip(&ends).enumerate() {
        for x in node_samples.iter().chain([end]) {
            csv.push_str(&format!(
                "{k},{:.1},{},{},{},{},{}\n",
                x.at, x.stats.rss_kib, x.stats.fds, x.stats.threads, x.connections, x.subscriptions
            ));
        }
    }
    let file = dir.join(if redis {
        format!("soak-redis-{secs}s.csv")
    } else {
        format!("soak-{secs}s.csv")
    });
    let _ = std::fs::write(&file, &csv);

    eprintln!(
        "soak {secs}s ({}): published {}, delivered to steady subscribers {}, churned connections {}, \
         order errors {}; samples in {}",
        if redis {
            "two nodes, Redis"
        } else {
            "one node, memory"
        },
        sent.load(Ordering::Relaxed),
        got.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed),
        disorder.load(Ordering::Relaxed),
        file.display()
    );
    if !redis_rss.is_empty() {
        eprintln!(
            "  redis-server RSS {} → {} KiB",
            redis_rss[0],
            redis_rss[redis_rss.len() - 1]
        );
    }
    assert!(
        sent.load(Ordering::Relaxed) > secs * 20,
        "publishing kept up"
    );
    assert!(got.load(Ordering::Relaxed) > 0, "subscribers received");
    assert_eq!(disorder.load(Ordering::Relaxed), 0, "order or duplicates");
    for (k, (samples, end)) in samples.iter().zip(&ends).enumerate() {
        check_node(k, samples, end);
    }
}

/// A node's figures stayed flat.
fn check_node(k: usize, samples: &[Sample], end: &Sample) {
    // Warm-up: the first quarter. Then compare the second quarter with the
    // last: resident memory may move with allocator slack, not keep rising.
    let q = samples.len() / 4;
    let rss = |part: &[Sample]| median(part.iter().map(|x| x.stats.rss_kib as f64).collect());
    let early = rss(&samples[q..2 * q.max(1)]);
    let late = rss(&samples[samples.len() - q.max(1)..]);
    let fds_peak = samples.iter().map(|x| x.stats.fds).max().unwrap_or(0);
    let threads_peak = samples.iter().map(|x| x.stats.threads).max().unwrap_or(0);
    let conns_peak = samples.iter().map(|x| x.connections).fold(0.0, f64::max);
    eprintln!(
        "  node {k}: RSS median early {early:.0} KiB, late {late:.0} KiB; peaks: fds {fds_peak}, \
         threads {threads_peak}, connections {conns_peak}; end: {end:?}"
    );
    assert_eq!(
        end.subscriptions, 0.0,
        "node {k}: subscriptions gauge back to 0"
    );
    let first = samples.first().map(|x| x.stats).expect("samples");
    assert!(
        end.stats.fds <= first.fds.min(end.stats.fds) + 8,
        "node {k}: fds after the soak {} vs at start {}",
        end.stats.fds,
        first.fds
    );
    assert!(
        end.stats.threads <= first.threads + 4,
        "node {k}: threads grew: {} → {}",
        first.threads,
        end.stats.threads
    );
    assert!(
        late <= early * 1.25 + 8192.0,
        "node {k}: resident memory keeps growing: {early:.0} KiB → {late:.0} KiB"
    );
}
