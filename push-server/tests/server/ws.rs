//! The WebSocket protocol (docs/protocol.md) with a real client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::common::*;

#[tokio::test]
async fn welcome_subscribe_message_unsubscribe() {
    let s = start(&["--heartbeat", "7s", "--idle-timeout", "20s"]).await;
    let mut ws = ws_connect(&s, "").await;
    let welcome = ws_next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_ms"], 7000);
    assert!(welcome["connection_id"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));

    ws_send(&mut ws, json!({"type": "subscribe", "channel": "news"})).await;
    let sub = ws_next(&mut ws).await;
    assert_eq!(
        (
            sub["type"].as_str(),
            sub["channel"].as_str(),
            sub["recovered"].as_bool()
        ),
        (Some("subscribed"), Some("news"), Some(true))
    );

    let id = publish(&s, "news", r#"{"headline":"hello"}"#).await;
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "message", "channel": "news", "id": id, "data": {"headline": "hello"}})
    );

    ws_send(&mut ws, json!({"type": "unsubscribe", "channel": "news"})).await;
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "unsubscribed", "channel": "news"})
    );
    publish(&s, "news", "1").await;
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "pong"}),
        "no message after unsubscribe"
    );
}

#[tokio::test]
async fn thousand_rapid_publishes_arrive_in_order() {
    let s = start(&["--history-size", "10"]).await;
    let mut ws = ws_subscribed(&s, "fast").await;
    let mut sse = sse_connect(&s, "?channels=fast", None).await;
    let ids = publish_numbers(&s, "fast", 1000).await;
    assert!(
        ids.windows(2).all(|w| id_pair(&w[0]) < id_pair(&w[1])),
        "ids increase"
    );
    for (i, id) in ids.iter().enumerate() {
        let m = ws_next(&mut ws).await;
        assert_eq!(
            (m["id"].as_str(), m["data"].as_u64()),
            (Some(id.as_str()), Some(i as u64))
        );
        let e = sse.next_message().await;
        assert_eq!(
            (e["id"].as_str(), e["data"].as_u64()),
            (Some(id.as_str()), Some(i as u64))
        );
    }
}

/// Publishes continuously to `channels` until told to stop; returns every
/// accepted id per channel.
fn publisher(
    s: &TestServer,
    channels: &[&'static str],
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<HashMap<String, Vec<String>>>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let base = s.http("");
    let channels = channels.to_vec();
    let task = tokio::spawn(async move {
        let c = client();
        let mut accepted: HashMap<String, Vec<String>> = HashMap::new();
        let mut n = 0u64;
        while !*stopped.borrow_and_update() {
            for ch in &channels {
                let r = c
                    .post(format!("{base}/api/v1/channels/{ch}/messages"))
                    .header("content-type", "application/json")
                    .body(n.to_string())
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                accepted
                    .entry(ch.to_string())
                    .or_default()
                    .push(v["id"].as_str().unwrap().to_string());
                n += 1;
            }
            tokio::task::yield_now().await;
        }
        accepted
    });
    (stop, task)
}

#[tokio::test]
async fn resume_with_since_has_no_gap_and_no_duplicate_while_publishing() {
    let s = start(&["--history-size", "1000"]).await;
    let (stop, task) = publisher(&s, &["ra", "rb"]);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();

    // Three sessions in a row, each resuming from the last id it saw.
    let mut last: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        let mut ws = ws_connect(&s, "").await;
        assert_eq!(ws_next(&mut ws).await["type"], "welcome");
        for ch in ["ra", "rb"] {
            let mut frame = json!({"type": "subscribe", "channel": ch});
            if let Some(id) = last.get(ch) {
                frame["since"] = json!(id);
            }
            ws_send(&mut ws, frame).await;
        }
        let mut got = 0;
        while got < 60 {
            let f = ws_next(&mut ws).await;
            match f["type"].as_str() {
                Some("subscribed") => {
                    assert_eq!(f["recovered"], true, "round {round}: {f}");
                    if !last.contains_key(f["channel"].as_str().unwrap()) {
                        // First session: start from the position it reports.
                        last.insert(
                            f["channel"].as_str().unwrap().into(),
                            f["position"].as_str().unwrap().into(),
                        );
                        seen.entry(f["channel"].as_str().unwrap().into())
                            .or_default();
                    }
                }
                Some("message") => {
                    let ch = f["channel"].as_str().unwrap().to_string();
                    let id = f["id"].as_str().unwrap().to_string();
                    seen.entry(ch.clone()).or_default().push(id.clone());
                    last.insert(ch, id);
                    got += 1;
                }
                _ => panic!("unexpected {f}"),
            }
        }
        drop(ws);
    }
    stop.send(true).unwrap();
    let accepted = task.await.unwrap();
    for ch in ["ra", "rb"] {
        let got = &seen[ch];
        let all = &accepted[ch];
        // Everything seen is exactly the accepted sequence from the first id
        // seen onwards: no gap, no duplicate, in order.
        let start = all
            .iter()
            .position(|id| *id == got[0])
            .expect("first seen id was accepted");
        assert_eq!(got[..], all[start..start + got.len()], "channel {ch}");
    }
}

#[tokio::test]
async fn since_older_than_history_is_not_recovered() {
    let s = start(&["--history-size", "2"]).await;
    let first = publish(&s, "old", "1").await;
    for i in 2..6 {
        publish(&s, "old", &i.to_string()).await;
    }
    let mut ws = ws_connect(&s, "").await;
    ws_next(&mut ws).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "channel": "old", "since": first}),
    )
    .await;
    let sub = ws_next(&mut ws).await;
    assert_eq!(sub["recovered"], false);
    // What is retained still comes, oldest first.
    assert_eq!(ws_next(&mut ws).await["data"], 4);
    assert_eq!(ws_next(&mut ws).await["data"], 5);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays() {
    let s = start(&[
        "--max-channels-per-connection",
        "2",
        "--max-message-bytes",
        "50",
    ])
    .await;
    let mut ws = ws_connect(&s, "").await;
    ws_next(&mut ws).await;
    let cases: Vec<(WsMsg, &str)> = vec![
        (WsMsg::Text("not json".into()), "invalid_frame"),
        (WsMsg::Text("[1,2]".into()), "invalid_frame"),
        (WsMsg::Text(r#"{"type":"dance"}"#.into()), "invalid_frame"),
        (WsMsg::Text(r#"{"channel":"x"}"#.into()), "invalid_frame"),
        (
            WsMsg::Binary(br#"{"type":"ping"}"#.to_vec().into()),
            "invalid_frame",
        ),
        (
            WsMsg::Text(r#"{"type":"subscribe","channel":"bad name"}"#.into()),
            "invalid_channel",
        ),
        (
            WsMsg::Text(r#"{"type":"subscribe","channel":"a","since":"nope"}"#.into()),
            "invalid_since",
        ),
        (
            WsMsg::Text(r#"{"type":"unsubscribe","channel":"zzz"}"#.into()),
            "not_subscribed",
        ),
        (
            WsMsg::Text(
                format!(
                    r#"{{"type":"publish","channel":"a","data":"{}"}}"#,
                    "x".repeat(60)
                )
                .into(),
            ),
            "message_too_large",
        ),
    ];
    for (frame, code) in cases {
        ws.send(frame.clone()).await.unwrap();
        let e = ws_next(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "after {frame:?}: {e}"
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for ch in ["a", "b"] {
        ws_send(&mut ws, json!({"type": "subscribe", "channel": ch})).await;
        assert_eq!(ws_next(&mut ws).await["type"], "subscribed");
    }
    ws_send(&mut ws, json!({"type": "subscribe", "channel": "a"})).await;
    assert_eq!(ws_next(&mut ws).await["code"], "already_subscribed");
    ws_send(&mut ws, json!({"type": "subscribe", "channel": "c"})).await;
    let e = ws_next(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["channel"].as_str()),
        (Some("too_many_channels"), Some("c"))
    );
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "pong"}),
        "still open and serving"
    );
}

#[tokio::test]
async fn bad_url_channels_fail_the_handshake() {
    let s = start(&["--max-channels-per-connection", "2"]).await;
    for (q, code) in [
        ("?channels=a%20b", "invalid_channel"),
        ("?channels=a,b,c", "too_many_channels"),
    ] {
        let r = client()
            .get(s.http(&format!("/ws{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, code);
    }
    let r = client().get(s.http("/ws")).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "websocket_required");
}

#[tokio::test]
async fn publish_frame() {
    let s = start(&[]).await;
    let mut sub = ws_subscribed(&s, "chat").await;
    let mut pubr = ws_connect(&s, "").await;
    ws_next(&mut pubr).await;
    ws_send(
        &mut pubr,
        json!({"type": "publish", "channel": "chat", "data": {"text": "hi"}}),
    )
    .await;
    let ack = ws_next(&mut pubr).await;
    assert_eq!(ack["type"], "published");
    let m = ws_next(&mut sub).await;
    assert_eq!(
        (m["data"].clone(), m["id"].clone()),
        (json!({"text": "hi"}), ack["id"].clone())
    );
}

#[tokio::test]
async fn server_pings_and_a_live_client_stays() {
    let s = start(&["--heartbeat", "100ms", "--idle-timeout", "300ms"]).await;
    let mut ws = ws_connect(&s, "").await;
    let mut pings = 0;
    while pings < 6 {
        // The client answers each Ping with a Pong while reading.
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(WsMsg::Ping(_))) => pings += 1,
            Some(Ok(WsMsg::Text(_))) => {}
            other => panic!("connection of a live client ended: {other:?}"),
        }
    }
}

/// A raw client that sends the handshake for `path` and then nothing.
async fn raw_ws(s: &TestServer, path: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test]
async fn idle_client_is_closed_after_idle_timeout() {
    let s = start(&["--heartbeat", "100ms", "--idle-timeout", "400ms"]).await;
    let started = Instant::now();
    let mut tcp = raw_ws(&s, "/ws").await;
    let mut buf = vec![0u8; 4096];
    let mut received = Vec::new();
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}, before idle_timeout"
    );
    let pings = received.windows(2).filter(|w| w == &[0x89, 0x00]).count();
    assert!(pings >= 2, "Pings were sent before closing");
    assert!(
        received.windows(1).any(|w| w[0] == 0x88),
        "a Close frame was sent"
    );
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_others_get_everything() {
    let s = start(&["--outbound-queue", "16", "--history-size", "0"]).await;
    // A stalled reader with a tiny receive buffer that never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws?channels=flood HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    );
    stalled.write_all(req.as_bytes()).await.unwrap();
    let mut fast = ws_subscribed(&s, "flood").await;
    wait_metric(&s, "push_subscriptions", 2.0).await;

    let payload = format!("\"{}\"", "x".repeat(8000));
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < 2000 {
            let m = ws_next(&mut fast).await;
            ids.push(m["id"].as_str().unwrap().to_string());
        }
        ids
    });
    let mut published = Vec::new();
    for _ in 0..2000 {
        published.push(publish(&s, "flood", &payload).await);
    }
    assert_eq!(
        reader.await.unwrap(),
        published,
        "the fast reader got every message, in order"
    );
    wait_metric(&s, "push_slow_consumer_disconnects_total", 1.0).await;
    wait_metric(&s, "push_connections{transport=\"ws\"}", 0.0).await;
}

#[tokio::test]
async fn max_connection_lifetime_asks_to_reconnect() {
    let s = start(&["--max-connection-lifetime", "300ms"]).await;
    let mut ws = ws_subscribed(&s, "life").await;
    let f = ws_next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("reconnect"), Some("max_lifetime"))
    );
    assert!(f["retry_ms"].as_u64().is_some());
    assert_eq!(ws_closed(&mut ws).await, Some(1001));
}

/// The text payloads of the complete server frames at the start of `bytes`
/// (unmasked, unfragmented, as the server sends them).
fn text_frames(mut bytes: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (len, head) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            n if n < 126 => (n as usize, 2),
            _ => break,
        };
        if bytes.len() < head + len {
            break;
        }
        if bytes[0] == 0x81 {
            out.push(serde_json::from_slice(&bytes[head..head + len]).expect("JSON text frame"));
        }
        bytes = &bytes[head + len..];
    }
    out
}

#[tokio::test]
async fn write_delay_sends_queued_messages_in_one_write() {
    // The longest delay allowed, so that three publishes surely fit in it.
    let s = start(&["--write-delay", "1s"]).await;
    let mut tcp = raw_ws(&s, "/ws?channels=batched").await;
    // Handshake, welcome and subscribed are not delayed.
    let frames = read_until(&mut tcp, "handshake and subscribed", |got| {
        let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        let frames = text_frames(&got[end + 4..]);
        frames
            .iter()
            .any(|f| f["type"] == "subscribed")
            .then_some(frames)
    })
    .await;
    assert_eq!(frames[0]["type"], "welcome");

    // All three come in one read: one write after the delay.
    let (ids, read) = publish_held_then_read(&s, "ws", &mut tcp).await;
    let batch = text_frames(&read);
    assert_eq!(
        batch
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ids,
        "one read held the three messages, in order: {batch:?}"
    );
}

#[tokio::test]
async fn write_delay_never_overflows_a_small_queue() {
    // A queue shorter than a batch: the connection must write before it is
    // full, not wait out the delay and be cut off as a slow consumer.
    let s = start(&["--write-delay", "1s", "--outbound-queue", "4"]).await;
    let mut ws = ws_subscribed(&s, "small").await;
    let ids = publish_numbers(&s, "small", 6).await;
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let m = ws_next(&mut ws).await;
        assert_eq!(m["type"], "message", "{m}");
        got.push(m["id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(got, ids);
    assert_eq!(
        metric(&s, "push_slow_consumer_disconnects_total").await,
        0.0
    );
}

/// A connection of one channel gets its deliveries written by the fan-out
/// while its task waits (docs/architecture.md, "The lane"). A client that
/// stops reading and sends Pings fills the server's socket: lane writes go
/// in part or not at all, tungstenite's Pongs wait in its buffer, the task
/// takes over. What the client reads must still be every frame whole, the
/// messages once and in order, and a Pong for each Ping.
#[tokio::test]
async fn a_connection_that_stops_reading_gets_every_frame_whole_and_in_order() {
    stalled_connection(0).await;
}

/// The same on a channel of more subscribers than the fan-out writes
/// itself: the flush tasks write its open lanes (docs/architecture.md, "The
/// lane"). The other connections, which read, get every message once and
/// in order too.
#[tokio::test]
async fn a_connection_of_a_wide_channel_that_stops_reading_gets_every_frame_whole_and_in_order() {
    stalled_connection(12).await;
}

/// One connection to channel `stall` stops reading (and pings) while 16
/// messages of 512 KiB are published, with `readers` others that read.
async fn stalled_connection(readers: usize) {
    use futures_util::StreamExt;
    let s = start(&["--max-message-bytes", "1048576"]).await;
    let mut others = Vec::new();
    for _ in 0..readers {
        others.push(ws_subscribed(&s, "stall").await);
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window, so that the server's socket is full after a few frames.
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(s.addr).await.unwrap();
    let url = s.ws_url("/ws?channels=stall");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("handshake");
    assert_eq!(ws_next(&mut ws).await["type"], "welcome");
    assert_eq!(ws_next(&mut ws).await["type"], "subscribed");

    // 16 messages of 512 KiB each, and Pings, while the client reads nothing.
    let body = format!("\"{}\"", "x".repeat(512 * 1024));
    let mut ids = Vec::new();
    for i in 0..16u8 {
        ids.push(publish(&s, "stall", &body).await);
        ws.send(WsMsg::Ping(vec![i].into())).await.unwrap();
    }
    let (mut seen, mut pongs) = (Vec::new(), Vec::new());
    while seen.len() < ids.len() || pongs.len() < 16 {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frames within the wait")
            .expect("open")
            .unwrap_or_else(|e| panic!("a whole frame: {e}"));
        match frame {
            WsMsg::Text(t) => {
                let env: Value = serde_json::from_str(&t).expect("JSON frame");
                assert_eq!(env["type"], "message", "{}", &t[..t.len().min(100)]);
                assert_eq!(env["data"].as_str().map(str::len), Some(512 * 1024));
                seen.push(env["id"].as_str().unwrap().to_string());
            }
            WsMsg::Pong(p) => pongs.push(p[0]),
            WsMsg::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ids, "every message once, in order");
    assert_eq!(pongs, (0..16).collect::<Vec<u8>>(), "a Pong for each Ping");

    // Read again: the next delivery arrives as before.
    let next = publish(&s, "stall", "17").await;
    assert_eq!(ws_next(&mut ws).await["id"], next);
    ids.push(next);
    for mut other in others {
        let mut got = Vec::new();
        while got.len() < ids.len() {
            let m = ws_next(&mut other).await;
            assert_eq!(m["type"], "message", "{m}");
            got.push(m["id"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(
            got, ids,
            "a reading connection: every message once, in order"
        );
    }
    all_delivered_none_kicked(&s, "ws", (17 * (1 + readers)) as f64).await;
}

#[tokio::test]
async fn handshakes_hyper_serves_still_upgrade() {
    use tokio::net::TcpStream;
    // A handshake with a body length is not the raw path's: hyper and the
    // router serve it, and it upgrades all the same.
    let s = start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(
        b"GET /ws?channels=h HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "the 101", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("\r\n\r\n").then(|| text.into_owned())
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // And a keep-alive connection's later request for /ws.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /ws?channels=h HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut tcp, "200 then 101", |got| {
        let text = String::from_utf8_lossy(got);
        (text.starts_with("HTTP/1.1 200") && text.contains("HTTP/1.1 101")).then_some(())
    })
    .await;
}
