//! Acknowledged delivery (docs/delivery.md, `ack:true`) with a real WebSocket client.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn ack_sub(s: &TestServer, channel: &str) -> Ws {
    let mut ws = ws_connect(s, "").await;
    ws_next(&mut ws).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "channel": channel, "ack": true}),
    )
    .await;
    assert_eq!(ws_next(&mut ws).await["type"], "subscribed");
    ws
}

#[tokio::test]
async fn a_client_that_acks_gets_each_message_once() {
    // 1 s: long enough that a machine busy with other tests cannot delay an
    // ack past it (200 ms did: a redelivery then reads as a duplicate).
    let s = start(&["--ack-timeout", "1s", "--ack-window", "4"]).await;
    let mut ws = ack_sub(&s, "acked").await;
    let ids = publish_numbers(&s, "acked", 50).await;
    let mut got = Vec::new();
    while got.len() < 50 {
        let m = ws_next(&mut ws).await;
        assert_eq!(m["type"], "message");
        let id = m["id"].as_str().unwrap().to_string();
        ws_send(
            &mut ws,
            json!({"type": "ack", "channel": "acked", "id": id}),
        )
        .await;
        got.push(id);
    }
    assert_eq!(got, ids, "in order, each once");
    // Proving that nothing more comes needs time to pass: three ack timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut ws).await["type"],
        "pong",
        "no redelivery of acked messages"
    );
    assert_eq!(metric(&s, "push_redeliveries_total").await, 0.0);
    assert_eq!(metric(&s, "push_acks_total").await, 50.0);
    assert!(metric(&s, "push_ack_latency_seconds_count").await >= 50.0);
}

#[tokio::test]
async fn a_client_that_never_acks_gets_exactly_max_redeliveries() {
    let s = start(&["--ack-timeout", "100ms", "--max-redeliveries", "3"]).await;
    let mut ws = ack_sub(&s, "na").await;
    let id = publish(&s, "na", "\"important\"").await;
    let mut deliveries = 0;
    let err: Value = loop {
        let f = ws_next(&mut ws).await;
        match f["type"].as_str() {
            Some("message") => {
                assert_eq!(f["id"], id.as_str());
                deliveries += 1;
            }
            Some("error") => break f,
            _ => panic!("unexpected {f}"),
        }
    };
    assert_eq!(deliveries, 1 + 3, "first delivery plus max_redeliveries");
    assert_eq!(
        (
            err["code"].as_str(),
            err["channel"].as_str(),
            err["id"].as_str()
        ),
        (Some("ack_timeout"), Some("na"), Some(id.as_str()))
    );
    assert_eq!(metric(&s, "push_redeliveries_total").await, 3.0);
    // Delivery goes on after giving up.
    let next = publish(&s, "na", "2").await;
    assert_eq!(ws_next(&mut ws).await["id"], next.as_str());
}

#[tokio::test]
async fn the_window_holds_back_and_others_are_unaffected() {
    let s = start(&["--ack-window", "2", "--ack-timeout", "30s"]).await;
    let mut acker = ack_sub(&s, "w").await;
    let mut plain = ws_subscribed(&s, "w").await;
    let ids = publish_numbers(&s, "w", 5).await;
    for id in &ids {
        assert_eq!(
            ws_next(&mut plain).await["id"],
            id.as_str(),
            "the plain subscriber gets everything at once"
        );
    }
    assert_eq!(ws_next(&mut acker).await["id"], ids[0].as_str());
    assert_eq!(ws_next(&mut acker).await["id"], ids[1].as_str());
    // The window is full: a ping is answered before any third message.
    ws_send(&mut acker, json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut acker).await["type"], "pong");
    ws_send(
        &mut acker,
        json!({"type": "ack", "channel": "w", "id": ids[0]}),
    )
    .await;
    assert_eq!(
        ws_next(&mut acker).await["id"],
        ids[2].as_str(),
        "an ack moves the window by one"
    );
    ws_send(&mut acker, json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut acker).await["type"], "pong");
}

#[tokio::test]
async fn a_window_that_stays_full_ends_as_slow_consumer() {
    let s = start(&[
        "--ack-window",
        "1",
        "--outbound-queue",
        "4",
        "--ack-timeout",
        "30s",
    ])
    .await;
    let mut ws = ack_sub(&s, "full").await;
    for i in 0..10 {
        publish(&s, "full", &i.to_string()).await;
    }
    assert_eq!(ws_next(&mut ws).await["type"], "message");
    let f = ws_next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("reconnect"), Some("slow_consumer"))
    );
    wait_metric(&s, "push_slow_consumer_disconnects_total", 1.0).await;
}

#[tokio::test]
async fn ack_errors() {
    let s = start(&[]).await;
    let mut ws = ws_subscribed(&s, "plain").await;
    ws_send(
        &mut ws,
        json!({"type": "ack", "channel": "plain", "id": "1-0"}),
    )
    .await;
    assert_eq!(ws_next(&mut ws).await["code"], "invalid_frame");
    let mut ws = ack_sub(&s, "a").await;
    ws_send(
        &mut ws,
        json!({"type": "ack", "channel": "a", "id": "nope"}),
    )
    .await;
    assert_eq!(ws_next(&mut ws).await["code"], "invalid_frame");
    ws_send(&mut ws, json!({"type": "ack", "channel": "a", "id": "1-0"})).await;
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut ws).await["type"],
        "pong",
        "an ack of an unknown id is ignored"
    );
}
