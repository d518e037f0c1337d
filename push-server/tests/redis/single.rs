//! One Redis, two or more nodes: ids and order, many channels, an outage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{id_pair, metric, publish, sse_connect, ws_next, ws_subscribed, WAIT};
use crate::nodes::{history_ids, node, subscribe_since, try_publish, wait_ready, ws_messages};
use crate::procs::Redis;

/// A channel with no history yet, subscribed on one node and published to at
/// once on another: the first message arrives, and a resume from the
/// `subscribed` position recovers it. (Its id used to be `<ms>-0` of the
/// very millisecond in which the subscriber read "no stream" and took
/// `<ms>-0` as its position, so the subscriber skipped it as already seen:
/// about one round in three lost its first message here.)
#[tokio::test]
async fn first_message_of_a_fresh_channel_reaches_a_subscriber_of_another_node() {
    first_messages_across_nodes(&[], true).await;
}

/// The same without history (`history_size: 0`, pure pub/sub), where ids
/// come from an empty stream: live delivery only.
#[tokio::test]
async fn first_message_of_a_fresh_channel_without_history_reaches_another_node() {
    first_messages_across_nodes(&["--history-size", "0"], false).await;
}

/// 30 fresh channels, each subscribed on node A and published to twice at
/// once on node B; with `resume`, each is resumed from its `subscribed`
/// position too.
async fn first_messages_across_nodes(extra: &[&str], resume: bool) {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let args: Vec<&str> = ["--redis-url", url.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let a = node(&args).await;
    let b = node(&args).await;
    let ids_of = |got: Vec<(String, String, serde_json::Value)>| -> Vec<String> {
        got.into_iter().map(|(_, id, _)| id).collect()
    };
    for round in 0..30 {
        let channel = format!("fresh{round}");
        let mut ws = crate::common::ws_connect(&a, &format!("?channels={channel}")).await;
        assert_eq!(ws_next(&mut ws).await["type"], "welcome");
        let sub = ws_next(&mut ws).await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        let position = sub["position"].as_str().expect("position").to_string();
        let ids = [
            publish(&b, &channel, "1").await,
            publish(&b, &channel, "2").await,
        ];
        let got = ids_of(ws_messages(&mut ws, 2).await);
        assert_eq!(got, ids, "round {round}: live delivery");
        if resume {
            let (mut again, f) = subscribe_since(&a, &channel, &position).await;
            assert_eq!(f["recovered"], true, "round {round}: {f}");
            let resumed = ids_of(ws_messages(&mut again, 2).await);
            assert_eq!(resumed, ids, "round {round}: resume from {position}");
        }
    }
}

#[tokio::test]
async fn two_nodes_see_the_same_ids_in_the_same_order() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url]).await;
    let b = node(&["--redis-url", &url]).await;

    let mut ws_a = ws_subscribed(&a, "news").await;
    let mut ws_b = ws_subscribed(&b, "news").await;
    let mut sse_a = sse_connect(&a, "?channels=news", None).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &b } else { &a };
        ids.push(publish(node, "news", &json!({ "n": i }).to_string()).await);
    }
    assert!(
        ids.windows(2).all(|w| id_pair(&w[0]) < id_pair(&w[1])),
        "ids increase: {ids:?}"
    );
    for ws in [&mut ws_a, &mut ws_b] {
        let got = ws_messages(ws, ids.len()).await;
        let got_ids: Vec<&str> = got.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(got_ids, ids);
        for (i, (ch, _, data)) in got.iter().enumerate() {
            assert_eq!((ch.as_str(), data), ("news", &json!({ "n": i })));
        }
    }
    for id in &ids {
        assert_eq!(sse_a.next_message().await["id"], id.as_str());
    }

    // History is shared: resume on B from the 10th id.
    let hist_ids = history_ids(&b, &format!("news/messages?since={}&limit=5", ids[9])).await;
    assert_eq!(hist_ids, ids[10..15]);

    // A WS resume on A from there gets the rest without a gap.
    let (mut ws, f) = subscribe_since(&a, "news", &ids[29]).await;
    assert_eq!(
        (f["type"].as_str(), f["recovered"].as_bool()),
        (Some("subscribed"), Some(true)),
        "{f}"
    );
    let rest = ws_messages(&mut ws, 10).await;
    assert_eq!(
        rest.iter()
            .map(|(_, id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ids[30..]
    );
}

#[tokio::test]
async fn history_is_capped_and_gaps_are_reported() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url, "--history-size", "3"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&a, "capped", &i.to_string()).await);
    }
    let hist = |since: &str| {
        let url = a.http(&format!("/api/v1/channels/capped/messages?since={since}"));
        async move {
            crate::common::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let h = hist(&ids[1]).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 3);
    // Resuming from ids[1] loses nothing (ids[1] itself was trimmed, the
    // rest is retained); from ids[0] it would lose ids[1].
    for (since, recovered) in [(&ids[1], true), (&ids[0], false)] {
        let (_ws, f) = subscribe_since(&a, "capped", since).await;
        assert_eq!(
            f["recovered"].as_bool(),
            Some(recovered),
            "since {since}: {f}"
        );
    }

    // history_size 0: pure pub/sub, ids still increase.
    let p = node(&["--redis-url", &url, "--history-size", "0"]).await;
    let mut ws = ws_subscribed(&p, "pure").await;
    let x = publish(&p, "pure", "1").await;
    let y = publish(&p, "pure", "2").await;
    assert!(id_pair(&x) < id_pair(&y));
    let got = ws_messages(&mut ws, 2).await;
    assert_eq!(
        (got[0].1.as_str(), got[1].1.as_str()),
        (x.as_str(), y.as_str())
    );
}

#[tokio::test]
async fn many_channels_one_subscription_each() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url, "--max-channels-per-connection", "1000"]).await;
    let b = node(&["--redis-url", &url]).await;
    let names: Vec<String> = (0..300).map(|i| format!("ch{i}")).collect();
    // Two connections per channel on A: still one Redis subscription each.
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(ws_subscribed(&a, &names.join(",")).await);
    }
    let numsub = crate::procs::cli(
        redis.port,
        &["PUBSUB", "NUMSUB", "push:{ch0}", "push:{ch299}"],
    )
    .await;
    assert_eq!(
        numsub.lines().collect::<Vec<_>>(),
        ["push:{ch0}", "1", "push:{ch299}", "1"]
    );
    let mut sent = HashMap::new();
    for round in 0..2 {
        let publishes = names.iter().map(|ch| {
            let b = &b;
            async move { (ch.clone(), publish(b, ch, &round.to_string()).await) }
        });
        for (ch, id) in futures_util::future::join_all(publishes).await {
            sent.entry(ch).or_insert_with(Vec::new).push(id);
        }
    }
    for ws in &mut conns {
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        for (ch, id, _) in ws_messages(ws, names.len() * 2).await {
            got.entry(ch).or_default().push(id);
        }
        assert_eq!(got, sent);
    }
}

#[tokio::test]
async fn redis_restart_mid_stream_loses_nothing_accepted() {
    // Append-only file on, so that the restarted Redis still holds the
    // history the catch-up reads (without it, see the Sentinel test and
    // docs/brokers.md: subscribers are told of the gap).
    let mut redis = Redis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url]).await;
    let b = node(&["--redis-url", &url]).await;
    let mut ws = ws_subscribed(&a, "live").await;
    let mut sse = sse_connect(&a, "?channels=live", None).await;

    // Publish continuously from B; remember every accepted id.
    let stop = tokio_util::sync::CancellationToken::new();
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let stop = stop.clone();
        let refusals = refusals.clone();
        let b_url = b.http("");
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = 0usize;
            let mut slowest = Duration::ZERO;
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let started = Instant::now();
                let resp = crate::common::client()
                    .post(format!("{b_url}/api/v1/channels/live/messages"))
                    .header("content-type", "application/json")
                    .body(n.to_string())
                    .send()
                    .await
                    .expect("publish answered");
                slowest = slowest.max(started.elapsed());
                let status = resp.status().as_u16();
                let v: serde_json::Value = resp.json().await.expect("json");
                match status {
                    200 => accepted.push(v["id"].as_str().unwrap().to_string()),
                    503 => {
                        assert_eq!(v["error"]["code"], "broker_unavailable");
                        refused += 1;
                        refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => panic!("publish status {other}: {v}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (accepted, refused, slowest)
        })
    };
    // Let some through, then kill Redis.
    let before: Vec<String> = ws_messages(&mut ws, 20)
        .await
        .into_iter()
        .map(|m| m.1)
        .collect();
    redis.kill().await;
    wait_ready(&a, false).await;
    assert_eq!(metric(&a, "push_broker_up").await, 0.0);
    assert!(try_publish(&b, "live", "0")
        .await
        .is_err_and(|(s, c)| s == 503 && c == "broker_unavailable"));
    let seen = refusals.clone();
    crate::procs::until("the publisher hits the outage", WAIT, || {
        let seen = seen.clone();
        async move { seen.load(std::sync::atomic::Ordering::Relaxed) > 0 }
    })
    .await;
    redis.restart().await;
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    // Some more after recovery, then stop.
    let deadline = Instant::now() + WAIT;
    while try_publish(&b, "live", "\"marker\"").await.is_err() {
        assert!(Instant::now() < deadline, "publish works again");
    }
    stop.cancel();
    let (accepted, refused, slowest) = publisher.await.unwrap();
    assert!(refused > 0, "some publishes hit the outage");
    assert!(
        slowest < Duration::from_secs(5),
        "no publish hung: {slowest:?}"
    );

    // The subscribers stayed connected and got every accepted message, in
    // order (20 were read above).
    let mut got = before;
    let last = accepted.last().unwrap().clone();
    while got.last() != Some(&last) {
        let f = tokio::time::timeout(Duration::from_secs(5), ws_next(&mut ws))
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = accepted.iter().filter(|id| !got.contains(id)).collect();
                panic!(
                    "accepted {} got {} missing {missing:?} got tail {:?}",
                    accepted.len(),
                    got.len(),
                    &got[got.len().saturating_sub(5)..]
                )
            });
        assert_eq!(f["type"], "message", "{f}");
        got.push(f["id"].as_str().unwrap().to_string());
    }
    assert!(
        got.windows(2).all(|w| id_pair(&w[0]) < id_pair(&w[1])),
        "in order"
    );
    for id in &accepted {
        assert!(got.contains(id), "accepted {id} delivered over WS");
    }
    let mut sse_ids = Vec::new();
    while sse_ids.last() != Some(&last) {
        sse_ids.push(sse.next_message().await["id"].as_str().unwrap().to_string());
    }
    for id in &accepted {
        assert!(sse_ids.contains(id), "accepted {id} delivered over SSE");
    }
    assert_eq!(metric(&a, "push_broker_up").await, 1.0);
}

#[tokio::test]
async fn restart_without_persistence_reports_the_gap() {
    // A Redis that comes back empty cannot say what was published while
    // the node was away: subscribers are told, not left with a silent gap.
    let mut redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url]).await;
    let mut ws = ws_subscribed(&a, "volatile").await;
    let mut sse = sse_connect(&a, "?channels=volatile", None).await;
    let id = publish(&a, "volatile", "1").await;
    assert_eq!(ws_messages(&mut ws, 1).await[0].1, id);
    assert_eq!(sse.next_message().await["id"], id.as_str());
    redis.restart().await;
    let f = ws_next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("reconnect"), Some("broker_gap")),
        "{f}"
    );
    loop {
        let ev = sse.next().await;
        if ev.event.as_deref() == Some("reconnect") {
            assert!(ev.data.contains("broker_gap"), "{ev:?}");
            break;
        }
        assert!(ev.comment, "unexpected {ev:?}");
    }
    // Resuming says so too.
    wait_ready(&a, true).await;
    let (_ws, f) = subscribe_since(&a, "volatile", &id).await;
    assert_eq!(f["recovered"].as_bool(), Some(false), "{f}");
}

#[tokio::test]
async fn a_quiet_channel_cursor_resumes_on_another_node() {
    // The id-only event of a never-published channel is a cursor too: a
    // client that reconnects with it misses nothing and is not reset.
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url]).await;
    let b = node(&["--redis-url", &url]).await;
    let mut sse = sse_connect(&a, "?channels=quiet", None).await;
    sse.next().await; // retry
    let cursor = sse.next().await.id.expect("an id-only event");
    drop(sse);
    // Ids are milliseconds: the first publish must land in a later one than
    // the cursor for a fresh stream's floor to matter.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let id = publish(&b, "quiet", "1").await;
    let mut sse = sse_connect(&b, "?channels=quiet", Some(&cursor)).await;
    assert_eq!(
        sse.next_message().await["id"],
        id.as_str(),
        "published while away, delivered on resume"
    );
}

#[tokio::test]
async fn expired_history_is_trimmed_and_the_gap_reported() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url, "--history-ttl", "2s"]).await;
    let mut old = Vec::new();
    for i in 0..6 {
        old.push(publish(&a, "aging", &i.to_string()).await);
    }
    // History ages on Redis' clock. 1.2 s later `mid` keeps the stream
    // alive; 1.2 s after that the six old ones have expired and mid has
    // not (0.8 s of margin each way for a slow machine).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mid = publish(&a, "aging", "6").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let xlen = || async {
        crate::procs::cli(redis.port, &["XLEN", "push:{aging}:h"])
            .await
            .trim()
            .to_string()
    };
    let (newest_old, older) = (&old[5], &old[4]);
    // Expired but not yet trimmed: readers skip them all the same.
    assert_eq!(xlen().await, "7");
    let recover = |expect: Vec<String>| {
        let a = &a;
        async move {
            for (since, recovered) in [(newest_old, true), (older, false)] {
                let (mut ws, f) = subscribe_since(a, "aging", since).await;
                assert_eq!(
                    f["recovered"].as_bool(),
                    Some(recovered),
                    "since {since}: {f}"
                );
                if recovered {
                    let got: Vec<_> = ws_messages(&mut ws, expect.len())
                        .await
                        .into_iter()
                        .map(|m| m.1)
                        .collect();
                    assert_eq!(got, expect);
                }
            }
        }
    };
    recover(vec![mid.clone()]).await;
    // The 8th entry's publish trims what expired.
    let new1 = publish(&a, "aging", "7").await;
    assert_eq!(xlen().await, "8");
    let new2 = publish(&a, "aging", "8").await;
    assert_eq!(
        xlen().await,
        "3",
        "the 8th entry's publish trimmed what expired"
    );
    recover(vec![mid, new1, new2]).await;
}

#[tokio::test]
async fn a_slot_epoch_ahead_of_the_clock_still_publishes() {
    // The epoch key is written from Redis' clock; after the clock steps back
    // it is ahead of the ids of a new stream. Publishing must go on, and the
    // new stream vouches for nothing before its first message.
    let redis = Redis::start(&[]).await;
    let a = node(&["--redis-url", &redis.url()]).await;
    let before = publish(&a, "ahead", "0").await;
    let cli = crate::procs::cli;
    let epochs = cli(redis.port, &["KEYS", "push:epoch:*"]).await;
    let epoch = epochs.trim();
    assert!(
        !epoch.is_empty() && !epoch.contains('\n'),
        "one epoch key: {epochs:?}"
    );
    let (ms, _) = id_pair(&before);
    let future = (ms + 3_600_000).to_string();
    assert_eq!(cli(redis.port, &["SET", epoch, &future]).await.trim(), "OK");
    // The stream is gone (as after its ttl): the next publish starts a new one.
    assert_eq!(
        cli(redis.port, &["DEL", "push:{ahead}:h"]).await.trim(),
        "1"
    );

    let first = publish(&a, "ahead", "1").await;
    let second = publish(&a, "ahead", "2").await;
    // Resuming from the new stream's first id misses nothing; from before
    // it, the client is told it may have.
    for (since, recovered) in [(&first, true), (&before, false)] {
        let (mut ws, f) = subscribe_since(&a, "ahead", since).await;
        assert_eq!(
            f["recovered"].as_bool(),
            Some(recovered),
            "since {since}: {f}"
        );
        if recovered {
            assert_eq!(ws_next(&mut ws).await["id"], second.as_str());
        }
    }
}
