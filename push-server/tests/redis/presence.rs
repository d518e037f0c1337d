//! Presence across nodes, and after a node dies.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{client, ws_subscribed, TestServer};
use crate::nodes::node;
use crate::procs::{free_port, until, Redis};

async fn presence(s: &TestServer, channel: &str) -> Option<u64> {
    let resp = client()
        .get(s.http(&format!("/api/v1/channels/{channel}/presence")))
        .send()
        .await
        .ok()?;
    let v: Value = resp.json().await.ok()?;
    v["connections"].as_u64()
}

#[tokio::test]
async fn presence_spans_nodes_and_forgets_dead_ones() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let a = node(&["--redis-url", &url]).await;
    // B is a real process, so that it can die without a goodbye.
    let port = free_port();
    let mut b_proc = tokio::process::Command::new(env!("CARGO_BIN_EXE_push-server"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("push-server binary runs");
    let b = TestServer {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        server: None,
    };
    crate::nodes::wait_ready(&b, true).await;

    let _a1 = ws_subscribed(&a, "room").await;
    let _a2 = ws_subscribed(&a, "room,other").await;
    let _b1 = ws_subscribed(&b, "room").await;
    for s in [&a, &b] {
        until(
            "presence counts every node",
            Duration::from_secs(10),
            || async move { presence(s, "room").await == Some(3) },
        )
        .await;
    }
    assert_eq!(presence(&a, "other").await, Some(1));
    assert_eq!(presence(&a, "empty").await, Some(0));

    b_proc.kill().await.expect("kill node B");
    until(
        "a dead node leaves presence",
        Duration::from_secs(15),
        || async { presence(&a, "room").await == Some(2) },
    )
    .await;
}
