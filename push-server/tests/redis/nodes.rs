//! push-server nodes on Redis, and the checks the scenarios share.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use crate::common::{client, history_page, start, ws_next, TestServer, Ws, WAIT};
use crate::procs::until;

/// Starts an in-process node with `args` and waits until it is ready
/// (Redis reached and the pub/sub connection up).
pub async fn node(args: &[&str]) -> TestServer {
    // Server logs in the test output (shown for failing tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "push_server=info".into()),
        )
        .with_test_writer()
        .try_init();
    let s = start(args).await;
    wait_ready(&s, true).await;
    s
}

/// Polls `/readyz` until it is 200 (`ready`) or 503 (not).
pub async fn wait_ready(s: &TestServer, ready: bool) {
    let url = s.http("/readyz");
    until("readiness", WAIT, || {
        let url = url.clone();
        async move {
            let status = client().get(url).send().await.map(|r| r.status().as_u16());
            status.ok() == Some(if ready { 200 } else { 503 })
        }
    })
    .await;
}

/// Publishes and returns the id, or the HTTP status and error code.
pub async fn try_publish(
    s: &TestServer,
    channel: &str,
    body: &str,
) -> Result<String, (u16, String)> {
    let resp = client()
        .post(s.http(&format!("/api/v1/channels/{channel}/messages")))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| (0, e.to_string()))?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.map_err(|e| (status, e.to_string()))?;
    if status == 200 {
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    } else {
        Err((
            status,
            v["error"]["code"].as_str().unwrap_or_default().to_string(),
        ))
    }
}

/// The ids of a history page, `/api/v1/channels/<path_and_query>`.
pub async fn history_ids(s: &TestServer, path_and_query: &str) -> Vec<String> {
    history_page(s, path_and_query).await["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// A new WebSocket subscribed to `channel` from `since`: the connection
/// and its `subscribed` frame (which says whether the gap was `recovered`).
pub async fn subscribe_since(s: &TestServer, channel: &str, since: &str) -> (Ws, Value) {
    let mut ws = crate::common::ws_connect(s, "").await;
    assert_eq!(ws_next(&mut ws).await["type"], "welcome");
    crate::common::ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "channel": channel, "since": since}),
    )
    .await;
    let f = ws_next(&mut ws).await;
    (ws, f)
}

/// The status, code and message of a publish that must fail.
pub async fn failed_publish(s: &TestServer, channel: &str) -> (u16, String, String) {
    let resp = client()
        .post(s.http(&format!("/api/v1/channels/{channel}/messages")))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("publish request");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("json");
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Reads `n` message frames of one WS connection; returns (channel, id, data).
pub async fn ws_messages(ws: &mut Ws, n: usize) -> Vec<(String, String, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let f = ws_next(ws).await;
        assert_eq!(f["type"], "message", "{f}");
        out.push((
            f["channel"].as_str().unwrap_or_default().to_string(),
            f["id"].as_str().unwrap_or_default().to_string(),
            f["data"].clone(),
        ));
    }
    out
}

pub fn redis_url_args(url: &str) -> Vec<String> {
    vec!["--redis-url".into(), url.into()]
}
