//! HTTP API: publish, batch, history, presence, probes and every error path.

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn publish_json_and_text_bodies() {
    let s = start(&[]).await;
    let a = publish(&s, "news", "{ \"title\" :\n \"hi\" }").await;
    let resp = client()
        .post(s.http("/api/v1/channels/news/messages"))
        .body("plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id_pair(&a) < id_pair(&b));

    let h: Value = client()
        .get(s.http("/api/v1/channels/news/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        h["messages"],
        json!([
            {"channel": "news", "id": a, "data": {"title": "hi"}},
            {"channel": "news", "id": b, "data": "plain text"},
        ])
    );
}

#[tokio::test]
async fn history_since_and_limit() {
    let s = start(&["--history-size", "5"]).await;
    let ids = publish_numbers(&s, "h", 8).await;
    let get = |q: String| {
        let url = s.http(&format!("/api/v1/channels/h/messages{q}"));
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let all = get(String::new()).await;
    let got: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[3..].iter().map(String::as_str).collect::<Vec<_>>(),
        "the 5 newest, oldest first"
    );

    let page = get(format!("?since={}&limit=2", ids[4])).await;
    let got: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [ids[5].as_str(), ids[6].as_str()],
        "since is exclusive, limit counts from since"
    );
    assert_eq!(page["recovered"], true);

    let gap = get(format!("?since={}", ids[0])).await;
    assert_eq!(gap["recovered"], false, "ids[1..3] were trimmed");

    let empty: Value = get(String::new()).await;
    assert!(empty["messages"].is_array());
    let none = client()
        .get(s.http("/api/v1/channels/never/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 200);
    assert_eq!(none.json::<Value>().await.unwrap()["messages"], json!([]));
}

#[tokio::test]
async fn batch_publish() {
    let s = start(&[]).await;
    let mut ws = ws_subscribed(&s, "a,b").await;
    let body = json!({"messages": [
        {"channel": "a", "data": {"n": 1}},
        {"channel": "b", "data": "two"},
        {"channel": "a", "data": 3},
    ]});
    let resp = client()
        .post(s.http("/api/v1/publish"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["channel"], "b");
    for want in [json!({"n": 1}), json!("two"), json!(3)] {
        assert_eq!(ws_next(&mut ws).await["data"], want);
    }
}

#[tokio::test]
async fn batch_with_a_bad_message_publishes_nothing() {
    let s = start(&["--max-message-bytes", "100"]).await;
    let post = |body: Value| client().post(s.http("/api/v1/publish")).json(&body).send();
    let bad_channel =
        json!({"messages": [{"channel": "ok", "data": 1}, {"channel": "no way", "data": 2}]});
    assert_eq!(
        error_code(post(bad_channel).await.unwrap(), 400).await,
        "invalid_channel"
    );
    let too_big = json!({"messages": [{"channel": "ok", "data": 1}, {"channel": "ok", "data": "x".repeat(200)}]});
    assert_eq!(
        error_code(post(too_big).await.unwrap(), 413).await,
        "message_too_large"
    );
    let missing = json!({"messages": [{"channel": "ok"}]});
    assert_eq!(
        error_code(post(missing).await.unwrap(), 400).await,
        "invalid_json"
    );
    let too_many = json!({"messages": (0..1001).map(|_| json!({"channel": "ok", "data": 0})).collect::<Vec<_>>()});
    assert_eq!(
        error_code(post(too_many).await.unwrap(), 400).await,
        "batch_too_large"
    );
    let not_json = client()
        .post(s.http("/api/v1/publish"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(not_json, 400).await, "invalid_json");

    let h: Value = client()
        .get(s.http("/api/v1/channels/ok/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        h["messages"],
        json!([]),
        "nothing of a refused batch was published"
    );
}

#[tokio::test]
async fn publish_errors() {
    let s = start(&["--max-message-bytes", "1000"]).await;
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        client()
            .post(s.http(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post(
        "/api/v1/channels/bad%20name/messages",
        "text/plain",
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_channel");
    let long = format!("/api/v1/channels/{}/messages", "c".repeat(129));
    assert_eq!(
        error_code(post(&long, "text/plain", b"x".to_vec()).await.unwrap(), 400).await,
        "invalid_channel"
    );
    let r = post(
        "/api/v1/channels/c/messages",
        "application/json",
        b"{\"a\":".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_json");
    let r = post(
        "/api/v1/channels/c/messages",
        "text/plain",
        vec![0xff, 0xfe],
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_body");
    let r = post(
        "/api/v1/channels/c/messages",
        "text/plain",
        vec![b'x'; 1001],
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 413).await, "message_too_large");
    let r = post(
        "/api/v1/channels/c/messages",
        "text/plain",
        vec![b'x'; 1000],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "exactly max_message_bytes is allowed");

    let r = client()
        .get(s.http("/api/v1/channels/c/messages?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_since");
    let r = client()
        .get(s.http("/api/v1/channels/c/messages?limit=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_limit");
    let r = client()
        .get(s.http("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = client()
        .delete(s.http("/api/v1/channels/c/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
}

#[tokio::test]
async fn probes_and_presence() {
    let s = start(&[]).await;
    assert_eq!(
        client()
            .get(s.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(s.http("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _a = ws_subscribed(&s, "room").await;
    let _b = sse_connect(&s, "?channels=room,other", None).await;
    let p: Value = client()
        .get(s.http("/api/v1/channels/room/presence"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["connections"], 2);
    let p: Value = client()
        .get(s.http("/api/v1/channels/empty/presence"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["connections"], 0);
}

#[tokio::test]
async fn metrics_follow_connections_and_messages() {
    let s = start(&[]).await;
    let mut ws1 = ws_subscribed(&s, "m1,m2").await;
    let ws2 = ws_subscribed(&s, "m1").await;
    let mut sse = sse_connect(&s, "?channels=m1", None).await;
    wait_metric(&s, "push_connections{transport=\"ws\"}", 2.0).await;
    wait_metric(&s, "push_connections{transport=\"sse\"}", 1.0).await;
    wait_metric(&s, "push_subscriptions", 4.0).await;
    assert_eq!(
        metric(&s, "push_connections_opened_total{transport=\"ws\"}").await,
        2.0
    );

    publish(&s, "m1", "1").await;
    ws_next(&mut ws1).await;
    sse.next_message().await;
    assert_eq!(metric(&s, "push_messages_published_total").await, 1.0);
    wait_metric(&s, "push_messages_delivered_total{transport=\"sse\"}", 1.0).await;
    assert!(metric(&s, "push_delivery_latency_seconds_count").await >= 2.0);
    assert_eq!(metric(&s, "push_broker_up").await, 1.0);

    drop(ws2);
    drop(sse);
    wait_metric(&s, "push_connections{transport=\"ws\"}", 1.0).await;
    wait_metric(&s, "push_connections{transport=\"sse\"}", 0.0).await;
    wait_metric(&s, "push_subscriptions", 2.0).await;
    assert_eq!(
        metric(&s, "push_connections_opened_total{transport=\"ws\"}").await,
        2.0,
        "a counter never goes down"
    );
}

#[tokio::test]
async fn max_connections_answers_503_with_retry_after() {
    let s = start(&["--max-connections", "2"]).await;
    let _a = ws_subscribed(&s, "x").await;
    let _b = sse_connect(&s, "?channels=x", None).await;
    let r = client()
        .get(s.http("/sse?channels=x"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r, 503).await, "too_many_connections");
    let err = tokio_tungstenite::connect_async(s.ws_url("/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected HTTP 503, got {other}"),
    }
    drop(_a);
    wait_metric(&s, "push_connections{transport=\"ws\"}", 0.0).await;
    let _c = ws_subscribed(&s, "x").await;
}

#[tokio::test]
async fn cors_and_websocket_origin() {
    let s = start(&["--allowed-origins", "https://app.example"]).await;
    let pre = client()
        .request(
            reqwest::Method::OPTIONS,
            s.http("/api/v1/channels/c/messages"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = client()
        .get(s.http("/api/v1/channels/c/messages"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!foreign
        .headers()
        .contains_key("access-control-allow-origin"));

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await.unwrap_err() {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other}"),
    }
    let mut req = s.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}
