//! Redis with a password (`requirepass`): the password comes from the URL
//! (`redis://:pass@host`), also for the master found through Sentinel.

use std::time::Duration;

use crate::common::{client, ws_subscribed, TestServer};
use crate::nodes::{failed_publish, node, try_publish, wait_ready, ws_messages};
use crate::procs::{cli, until, Redis, SentinelSet};

const PASS: &str = "s3cret";

/// Turns on `requirepass` (after the start, so that the helpers' PING
/// readiness check works without a password).
async fn require_pass(redis: &Redis) {
    assert_eq!(
        cli(redis.port, &["CONFIG", "SET", "requirepass", PASS]).await,
        "OK"
    );
}

async fn assert_pubsub_across(a: &TestServer, b: &TestServer, channel: &str) {
    let mut ws = ws_subscribed(a, channel).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            try_publish(b, channel, &i.to_string())
                .await
                .expect("publish"),
        );
    }
    let got: Vec<String> = ws_messages(&mut ws, 3)
        .await
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn password_in_url() {
    let redis = Redis::start(&[]).await;
    require_pass(&redis).await;
    let url = format!("redis://:{PASS}@127.0.0.1:{}", redis.port);
    let a = node(&["--redis-url", &url]).await;
    let b = node(&["--redis-url", &url]).await;
    assert_pubsub_across(&a, &b, "pw").await;

    // A wrong or missing password is an outage, not a startup error: the
    // node starts, /readyz stays 503 and publishes get 503.
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let none = redis.url();
    for (url, want) in [(&wrong, "AuthenticationFailed"), (&none, "NOAUTH")] {
        let s = crate::common::start(&["--redis-url", url]).await;
        let (status, code, message) = failed_publish(&s, "pw").await;
        assert_eq!(
            (status, code.as_str()),
            (503, "broker_unavailable"),
            "{url}"
        );
        assert!(message.contains(want), "{url}: {message}");
        wait_ready(&s, false).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let ready = client()
            .get(s.http("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 503, "{url}");
    }
}

/// Data nodes with a password behind Sentinel (the Sentinels themselves
/// without): `--redis-url redis://:pass@…` lends its password to the master
/// Sentinel names, also after a failover.
#[tokio::test]
async fn sentinel_with_password_on_the_data_nodes() {
    let set = SentinelSet::start().await;
    for s in &set.sentinels {
        assert_eq!(
            cli(s.port, &["SENTINEL", "SET", "mymaster", "auth-pass", PASS]).await,
            "OK"
        );
    }
    for r in [&set.replica, &set.master] {
        assert_eq!(
            cli(r.port, &["CONFIG", "SET", "masterauth", PASS]).await,
            "OK"
        );
    }
    require_pass(&set.replica).await;
    require_pass(&set.master).await;

    let addrs = set.sentinel_addrs();
    // The host of the URL is ignored: Sentinel names the master.
    let template = format!("redis://:{PASS}@127.0.0.1:1");
    let args = [
        "--redis-sentinel",
        &addrs,
        "--redis-master-name",
        "mymaster",
        "--redis-url",
        &template,
    ];
    let a = node(&args).await;
    let b = node(&args).await;
    assert_pubsub_across(&a, &b, "spw").await;

    // A forced failover: the promoted replica needs the password too.
    let sentinel = set.sentinels[0].port;
    assert_eq!(
        cli(sentinel, &["SENTINEL", "FAILOVER", "mymaster"]).await,
        "OK"
    );
    let new_master = set.replica.port.to_string();
    set.await_master(
        "sentinel names the replica",
        Duration::from_secs(20),
        |addr| addr.contains(&new_master),
    )
    .await;
    until(
        "publishing works on the new master",
        Duration::from_secs(20),
        || {
            let b = &b;
            async move { try_publish(b, "spw2", "\"probe\"").await.is_ok() }
        },
    )
    .await;
    wait_ready(&a, true).await;
    assert_pubsub_across(&a, &b, "spw3").await;
}
