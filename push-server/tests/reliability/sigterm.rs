//! SIGTERM during heavy publishing (memory broker, the built binary):
//! every accepted message is delivered to each subscriber or resumable from
//! history while the node still answers; the process exits 0 within the
//! drain period (plus the 5 s bound on finishing HTTP requests).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::common::*;

type Id = (u64, u64);

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Where its subscription started (messages after it are owed to it).
    start: Id,
    /// Delivered live, in arrival order.
    live: Vec<Id>,
    /// Read back from history after `reconnect`, while the node answered.
    resumed: Vec<Id>,
    /// When the last history read that succeeded was sent.
    last_read: Option<Instant>,
}

/// After `reconnect`: the node refuses new connections while draining, so
/// resume through the history API until the node is gone.
async fn resume(s: &TestServer, seen: &mut Seen) {
    let c = client();
    loop {
        let since = seen
            .resumed
            .last()
            .or(seen.live.last())
            .copied()
            .unwrap_or(seen.start);
        let sent = Instant::now();
        let url = s.http(&format!(
            "/api/v1/channels/t/messages?since={}-{}&limit=10000",
            since.0, since.1
        ));
        let Ok(r) = c.get(url).send().await else {
            return;
        };
        let Ok(v) = r.json::<Value>().await else {
            return;
        };
        seen.last_read = Some(sent);
        for m in v["messages"].as_array().into_iter().flatten() {
            seen.resumed.push(id_pair(m["id"].as_str().unwrap()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ws_subscriber(s: TestServer) -> Seen {
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("/ws?channels=t"))
        .await
        .unwrap();
    let mut seen = Seen::default();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time");
        let Some(Ok(WsMsg::Text(t))) = msg else {
            if let Some(Ok(_)) = msg {
                continue;
            }
            break;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("subscribed") => seen.start = id_pair(v["position"].as_str().unwrap()),
            Some("message") => seen.live.push(id_pair(v["id"].as_str().unwrap())),
            Some("reconnect") => break,
            _ => {}
        }
    }
    resume(&s, &mut seen).await;
    seen
}

async fn sse_subscriber(s: TestServer) -> Seen {
    let r = client()
        .get(s.http("/sse?channels=t"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    let mut seen = Seen::default();
    let mut first_id = true;
    'read: while let Ok(Some(Ok(chunk))) = tokio::time::timeout(WAIT, body.next()).await {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            if block.contains("event: reconnect") {
                break 'read;
            }
            if let Some(id) = id {
                if first_id && !block.contains("event: message") {
                    seen.start = id_pair(id);
                } else {
                    seen.live.push(id_pair(id));
                }
                first_id = false;
            }
        }
    }
    resume(&s, &mut seen).await;
    seen
}

#[tokio::test]
async fn sigterm_during_heavy_publishing_loses_nothing_accepted() {
    let drain = Duration::from_secs(3);
    let (mut p, s) = spawn(&["--drain-period", "3s", "--history-size", "200000"]).await;
    let subs: Vec<_> = (0..6)
        .map(|i| {
            let s = TestServer {
                addr: s.addr,
                server: None,
            };
            if i < 4 {
                tokio::spawn(ws_subscriber(s))
            } else {
                tokio::spawn(sse_subscriber(s))
            }
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Publishers: accepted ids with the moment their 200 arrived.
    let accepted = Arc::new(Mutex::new(Vec::<(Id, Instant)>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let (accepted, refused, url) = (
                accepted.clone(),
                refused.clone(),
                s.http("/api/v1/channels/t/messages"),
            );
            tokio::spawn(async move {
                let c = client();
                let mut failures = 0;
                while failures < 20 {
                    match c.post(&url).body("x").send().await {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap();
                            let id = id_pair(v["id"].as_str().unwrap());
                            accepted.lock().unwrap().push((id, Instant::now()));
                        }
                        Ok(r) => {
                            failures += 1;
                            refused.lock().unwrap().push(r.status().to_string());
                        }
                        Err(e) => {
                            failures += 1;
                            refused.lock().unwrap().push(format!("{e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let term = Instant::now();
    signal(p.pid(), "TERM");
    let status = tokio::task::spawn_blocking(move || p.0.wait())
        .await
        .unwrap()
        .unwrap();
    let exited = term.elapsed();
    for t in publishers {
        t.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    let mut report = Vec::new();
    for (i, sub) in subs.into_iter().enumerate() {
        let seen = sub.await.unwrap();
        let live: HashSet<Id> = seen.live.iter().copied().collect();
        let resumed: HashSet<Id> = seen.resumed.iter().copied().collect();
        let duplicated = (seen.live.len() - live.len())
            + (seen.resumed.len() - resumed.len())
            + live.intersection(&resumed).count();
        let owed: Vec<&(Id, Instant)> =
            accepted.iter().filter(|(id, _)| *id > seen.start).collect();
        let missing: Vec<&(Id, Instant)> = owed
            .iter()
            .copied()
            .filter(|(id, _)| !live.contains(id) && !resumed.contains(id))
            .collect();
        // Accepted before the subscriber's last history read: must be there.
        let lost = missing
            .iter()
            .filter(|(_, at)| seen.last_read.is_some_and(|r| *at < r))
            .count();
        let after_last_read = missing.len() - lost;
        assert!(
            seen.live.windows(2).all(|w| w[0] < w[1]),
            "subscriber {i}: live messages out of order"
        );
        report.push((
            i,
            owed.len(),
            live.len(),
            resumed.len(),
            lost,
            duplicated,
            after_last_read,
        ));
    }
    eprintln!(
        "SIGTERM: exit {status:?} after {exited:?}; accepted {}; refused {} ({:?})",
        accepted.len(),
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
    for (i, owed, live, resumed, lost, dup, after) in &report {
        eprintln!(
            "  subscriber {i} ({}): owed {owed}, delivered {live}, resumed {resumed}, lost {lost}, duplicated {dup}, accepted after its last history read {after}",
            if *i < 4 { "ws" } else { "sse" }
        );
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited < drain + Duration::from_secs(6),
        "exited after {exited:?}"
    );
    assert!(accepted.len() > 100, "publishing was heavy enough");
    for (i, owed, live, _, lost, dup, _) in report {
        assert!(live > 0 && owed > 0, "subscriber {i} got messages");
        assert_eq!((lost, dup), (0, 0), "subscriber {i}: lost / duplicated");
    }
}
