//! Master + replica + 3 Sentinels: the master is killed while a node
//! publishes; service resumes on the promoted replica and what was
//! acknowledged is delivered, or the subscriber is told of the gap.

use std::time::{Duration, Instant};

use crate::common::{id_pair, publish, ws_next, ws_subscribed, TestServer};
use crate::nodes::{node, try_publish};
use crate::procs::{until, SentinelSet};

async fn sentinel_node(set: &SentinelSet, extra: &[&str]) -> TestServer {
    let addrs = set.sentinel_addrs();
    let mut args = vec![
        "--redis-sentinel",
        &addrs,
        "--redis-master-name",
        "mymaster",
    ];
    args.extend_from_slice(extra);
    node(&args).await
}

#[tokio::test]
async fn failover_while_publishing() {
    let mut set = SentinelSet::start().await;
    let a = sentinel_node(&set, &[]).await;
    let b = sentinel_node(&set, &[]).await;
    // WAIT works while the replica is there.
    let c = sentinel_node(&set, &["--publish-min-replicas", "1"]).await;
    publish(&c, "safe", "1").await;

    let mut ws = ws_subscribed(&a, "fo").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let stop = stop.clone();
        let b_url = b.http("");
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = 0usize;
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let resp = crate::common::client()
                    .post(format!("{b_url}/api/v1/channels/fo/messages"))
                    .header("content-type", "application/json")
                    .body(n.to_string())
                    .send()
                    .await
                    .expect("publish answered");
                match resp.status().as_u16() {
                    200 => {
                        let v: serde_json::Value = resp.json().await.expect("json");
                        accepted.push(v["id"].as_str().unwrap_or_default().to_string());
                    }
                    503 => refused += 1,
                    other => panic!("publish status {other}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (accepted, refused)
        })
    };
    for _ in 0..10 {
        assert_eq!(ws_next(&mut ws).await["type"], "message");
    }
    set.kill_master_and_await_promotion().await;
    // Service resumes on the new master.
    let resumed = Instant::now();
    until(
        "publishing works on the new master",
        Duration::from_secs(20),
        || {
            let b = &b;
            async move { try_publish(b, "fo", "\"probe\"").await.is_ok() }
        },
    )
    .await;
    eprintln!(
        "publish resumed {:?} after the promotion",
        resumed.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let (accepted, refused) = publisher.await.expect("publisher");
    eprintln!("accepted {} refused {refused}", accepted.len());
    let last = accepted.last().expect("some accepted").clone();

    // Everything acknowledged arrives in order, or the subscriber is told.
    let mut got: Vec<String> = Vec::new();
    loop {
        let f = ws_next(&mut ws).await;
        match f["type"].as_str() {
            Some("message") => {
                let id = f["id"].as_str().unwrap_or_default().to_string();
                if let Some(prev) = got.last() {
                    assert!(id_pair(prev) < id_pair(&id), "in order");
                }
                let done = id == last;
                got.push(id);
                if done {
                    break;
                }
            }
            Some("reconnect") => {
                assert_eq!(f["reason"], "broker_gap", "{f}");
                eprintln!("subscriber told of a gap after {} messages", got.len());
                return;
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    let first = got.first().cloned().unwrap_or_default();
    for id in accepted.iter().filter(|id| id_pair(id) >= id_pair(&first)) {
        assert!(got.contains(id), "acknowledged {id} delivered");
    }
}
