//! Redis with a password (`requirepass`): the password comes from the URL
//! (`redis://:pass@host`), also for the master found through Sentinel, or
//! from `--redis-password` (and `--redis-sentinel-password`) in every mode:
//! one Redis, Sentinel with passwords on the data nodes and the Sentinels,
//! and a Redis Cluster.

use std::time::Duration;

use crate::common::{client, ws_subscribed, TestServer};
use crate::nodes::{failed_publish, node, try_publish, wait_ready, ws_messages};
use crate::procs::{cli, until, Cluster, Redis, SentinelSet};

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

/// A publish that must fail because of the password: 503 broker_unavailable
/// with Redis' reason in the message, and /readyz 503.
async fn refused_for(args: &[&str], want: &str) {
    let s = crate::common::start(args).await;
    let (status, code, message) = failed_publish(&s, "pw").await;
    assert_eq!(
        (status, code.as_str()),
        (503, "broker_unavailable"),
        "{args:?}"
    );
    assert!(message.contains(want), "{args:?}: {message}");
    wait_ready(&s, false).await;
    // /readyz says why, once the health check has run.
    until("/readyz names the reason", Duration::from_secs(10), || {
        let url = s.http("/readyz");
        async move {
            let body = match client().get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => return false,
            };
            body.contains("the broker is unreachable: ") && body.contains(want)
        }
    })
    .await;
}

#[tokio::test]
async fn password_setting_on_one_redis() {
    let redis = Redis::start_with_password(&[], Some(PASS)).await;
    let url = redis.url();
    let args = ["--redis-url", &url, "--redis-password", PASS];
    let a = node(&args).await;
    let b = node(&args).await;
    assert_pubsub_across(&a, &b, "pwset").await;

    // The setting wins over a (stale) password in the URL.
    let stale = format!("redis://:old@127.0.0.1:{}", redis.port);
    let c = node(&["--redis-url", &stale, "--redis-password", PASS]).await;
    assert_pubsub_across(&a, &c, "pwset2").await;

    refused_for(
        &["--redis-url", &url, "--redis-password", "wrong"],
        "AuthenticationFailed",
    )
    .await;
    refused_for(&["--redis-url", &url], "NOAUTH").await;
}

/// Sentinels and data nodes all with `requirepass`: one `--redis-password`
/// authenticates to both; `--redis-sentinel-password` is used for the
/// Sentinels only.
#[tokio::test]
async fn password_setting_on_sentinels_and_data_nodes() {
    let set = SentinelSet::start_with_password(Some(PASS)).await;
    let addrs = set.sentinel_addrs();
    let base = [
        "--redis-sentinel",
        &addrs,
        "--redis-master-name",
        "mymaster",
    ];
    let with = |extra: &[&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let a = node(&with(&["--redis-password", PASS])).await;
    let b = node(&with(&[
        "--redis-password",
        PASS,
        "--redis-sentinel-password",
        PASS,
    ]))
    .await;
    assert_pubsub_across(&a, &b, "sentpw").await;

    // No password: the Sentinels refuse to name the master.
    refused_for(&with(&[]), "NOAUTH").await;
    // A wrong Sentinel password with the right data password.
    refused_for(
        &with(&[
            "--redis-password",
            PASS,
            "--redis-sentinel-password",
            "wrong",
        ]),
        "AuthenticationFailed",
    )
    .await;
    // The right Sentinel password and a wrong data password: the master refuses.
    refused_for(
        &with(&[
            "--redis-password",
            "wrong",
            "--redis-sentinel-password",
            PASS,
        ]),
        "AuthenticationFailed",
    )
    .await;
}

#[tokio::test]
async fn password_setting_on_a_cluster() {
    let cluster = Cluster::start_with_password(Some(PASS)).await;
    let addrs = cluster.addrs();
    let args = ["--redis-cluster", &addrs, "--redis-password", PASS];
    let a = node(&args).await;
    let b = node(&args).await;
    // Channels on several shards.
    for ch in ["cpw1", "cpw2", "cpw3", "cpw4"] {
        assert_pubsub_across(&a, &b, ch).await;
    }
    refused_for(
        &["--redis-cluster", &addrs, "--redis-password", "wrong"],
        "AuthenticationFailed",
    )
    .await;
    refused_for(&["--redis-cluster", &addrs], "NOAUTH").await;
}
