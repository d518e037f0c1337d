//! Presence user ids (`sub` of subscriber tokens) across nodes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::{client, ws_connect, ws_next, TestServer, Ws};
use crate::nodes::node;
use crate::procs::{until, Redis};

const SECRET: &str = "test-secret-that-is-long-enough";

fn token(sub: &str, channels: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "channels": channels}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// A WebSocket of user `sub`, subscribed to `room`.
async fn ws_user(s: &TestServer, sub: &str) -> Ws {
    let t = token(sub, &["room"]);
    let mut ws = ws_connect(s, &format!("?channels=room&token={t}")).await;
    assert_eq!(ws_next(&mut ws).await["type"], "welcome");
    let f = ws_next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["channel"].as_str()),
        (Some("subscribed"), Some("room")),
        "{f}"
    );
    ws
}

/// Presence of `room` read with `auth` (a bearer publish key or token).
async fn presence(s: &TestServer, auth: &str) -> (u16, Value) {
    let resp = client()
        .get(s.http("/api/v1/channels/room/presence"))
        .bearer_auth(auth)
        .send()
        .await
        .expect("presence request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn presence_lists_users_of_every_node() {
    let redis = Redis::start(&[]).await;
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--jwt-secret",
        SECRET,
        "--publish-key",
        "pk",
    ];
    let a = node(&args).await;
    let b = node(&args).await;

    // alice on both nodes, bob on A, carol on B; dave elsewhere.
    let _a1 = ws_user(&a, "alice").await;
    let _a2 = ws_user(&a, "bob").await;
    let _b1 = ws_user(&b, "carol").await;
    let _b2 = ws_user(&b, "alice").await;

    let want = json!({"channel": "room", "connections": 4, "users": ["alice", "bob", "carol"]});
    let reader = token("dave", &["room"]);
    for (s, auth) in [
        (&a, "pk"),
        (&b, "pk"),
        (&a, reader.as_str()),
        (&b, reader.as_str()),
    ] {
        until("presence of both nodes", Duration::from_secs(10), || {
            let want = want.clone();
            async move { presence(s, auth).await == (200, want) }
        })
        .await;
    }
    // A token for another channel may not read it.
    let outsider = token("eve", &["elsewhere"]);
    assert_eq!(presence(&a, &outsider).await.0, 403);

    // carol leaves B: both nodes forget her within a presence period.
    drop(_b1);
    let want = json!({"channel": "room", "connections": 3, "users": ["alice", "bob"]});
    for s in [&a, &b] {
        until("carol leaves presence", Duration::from_secs(10), || {
            let want = want.clone();
            async move { presence(s, "pk").await == (200, want) }
        })
        .await;
    }
}
