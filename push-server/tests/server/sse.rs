//! The SSE protocol (docs/protocol.md) with a real streaming HTTP client.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn retry_first_then_messages_with_cursor_ids() {
    let s = start(&[]).await;
    let mut sse = sse_connect(&s, "?channels=n1,n2", None).await;
    let first = sse.next().await;
    assert_eq!(first.retry, Some(2000), "the very first line is retry:");
    let a = publish(&s, "n1", r#"{"x":1}"#).await;
    let env = sse.next_message().await;
    assert_eq!(env, json!({"channel": "n1", "id": a, "data": {"x": 1}}));
    let cursor = sse.last_event_id.clone().unwrap();
    assert!(
        cursor.contains(&a),
        "the cursor holds the position of n1: {cursor}"
    );
}

#[tokio::test]
async fn text_body_is_a_json_string() {
    let s = start(&[]).await;
    let mut sse = sse_connect(&s, "?channels=t", None).await;
    let resp = client()
        .post(s.http("/api/v1/channels/t/messages"))
        .body("line1\nline2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sse.next_message().await["data"], "line1\nline2");
}

#[tokio::test]
async fn last_event_id_resumes_two_channels_without_gap_or_duplicate() {
    let s = start(&["--history-size", "1000"]).await;
    let mut accepted: HashMap<&str, Vec<String>> = HashMap::new();
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut cursor: Option<String> = None;
    for round in 0..4 {
        // Header on even rounds, query parameter on odd ones.
        let mut sse = match (&cursor, round % 2) {
            (Some(c), 1) => {
                sse_connect(&s, &format!("?channels=sa,sb&lastEventId={c}"), None).await
            }
            (c, _) => sse_connect(&s, "?channels=sa,sb", c.as_deref()).await,
        };
        // Publish while connected, and between connections (below).
        for i in 0..25 {
            for ch in ["sa", "sb"] {
                accepted
                    .entry(ch)
                    .or_default()
                    .push(publish(&s, ch, &i.to_string()).await);
            }
        }
        let want: usize = accepted.values().map(Vec::len).sum();
        while seen.values().map(Vec::len).sum::<usize>() < want {
            let env = sse.next_message().await;
            seen.entry(env["channel"].as_str().unwrap().into())
                .or_default()
                .push(env["id"].as_str().unwrap().into());
        }
        cursor = sse.last_event_id.clone();
        drop(sse);
        for ch in ["sa", "sb"] {
            accepted
                .entry(ch)
                .or_default()
                .push(publish(&s, ch, "\"between\"").await);
        }
    }
    for ch in ["sa", "sb"] {
        let n = seen[ch].len();
        assert_eq!(
            seen[ch][..],
            accepted[ch][..n],
            "channel {ch}: every accepted id once, in order"
        );
    }
}

#[tokio::test]
async fn unrecoverable_channel_gets_reset() {
    let s = start(&["--history-size", "2"]).await;
    let a0 = publish(&s, "ka", "0").await;
    let b0 = publish(&s, "kb", "0").await;
    for i in 1..5 {
        publish(&s, "ka", &i.to_string()).await;
    }
    let b1 = publish(&s, "kb", "1").await;
    let mut sse = sse_connect(&s, "?channels=ka,kb", Some(&format!("{a0},{b0}"))).await;
    let mut resets = Vec::new();
    let mut messages = Vec::new();
    while messages.len() < 3 {
        let ev = sse.next().await;
        match ev.event.as_deref() {
            Some("reset") => {
                resets.push(serde_json::from_str::<Value>(&ev.data).unwrap()["channel"].clone())
            }
            Some("message") => messages.push(serde_json::from_str::<Value>(&ev.data).unwrap()),
            _ => {}
        }
    }
    assert_eq!(resets, vec![json!("ka")], "kb is recoverable, ka is not");
    let kb: Vec<_> = messages
        .iter()
        .filter(|m| m["channel"] == "kb")
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(kb, vec![json!(b1)]);
}

#[tokio::test]
async fn id_only_event_lets_a_quiet_stream_resume() {
    let s = start(&[]).await;
    let mut sse = sse_connect(&s, "?channels=quiet", None).await;
    sse.next().await; // retry
    let ev = sse.next().await;
    assert!(
        ev.id.is_some() && ev.event.is_none() && ev.data.is_empty(),
        "{ev:?}"
    );
    let cursor = ev.id.unwrap();
    drop(sse);
    let id = publish(&s, "quiet", "1").await;
    let mut sse = sse_connect(&s, "?channels=quiet", Some(&cursor)).await;
    assert_eq!(
        sse.next_message().await["id"],
        id,
        "published while away, delivered on resume"
    );
}

#[tokio::test]
async fn heartbeat_comments() {
    let s = start(&["--sse-heartbeat", "100ms"]).await;
    let mut sse = sse_connect(&s, "?channels=hb", None).await;
    let mut pings = 0;
    while pings < 3 {
        let ev = sse.next().await;
        if ev.comment && ev.data == "ping" {
            pings += 1;
        }
    }
}

#[tokio::test]
async fn sse_error_paths() {
    let s = start(&["--max-channels-per-connection", "2"]).await;
    let get = |q: &str, lei: Option<&str>| {
        let mut r = client().get(s.http(&format!("/sse{q}")));
        if let Some(l) = lei {
            r = r.header("last-event-id", l);
        }
        r.send()
    };
    assert_eq!(
        error_code(get("", None).await.unwrap(), 400).await,
        "invalid_channel"
    );
    assert_eq!(
        error_code(get("?channels=a%20b", None).await.unwrap(), 400).await,
        "invalid_channel"
    );
    assert_eq!(
        error_code(get("?channels=a,b,c", None).await.unwrap(), 400).await,
        "too_many_channels"
    );
    assert_eq!(
        error_code(get("?channels=a,b", Some("1-0")).await.unwrap(), 400).await,
        "invalid_cursor"
    );
    assert_eq!(
        error_code(
            get("?channels=a&lastEventId=garbage", None).await.unwrap(),
            400
        )
        .await,
        "invalid_cursor"
    );
}

#[tokio::test]
async fn sse_lifetime_reconnect_event() {
    let s = start(&["--max-connection-lifetime", "200ms"]).await;
    let mut sse = sse_connect(&s, "?channels=l", None).await;
    loop {
        let ev = sse.next().await;
        if ev.event.as_deref() == Some("reconnect") {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(v["reason"], "max_lifetime");
            assert!(v["retry_ms"].as_u64().is_some());
            break;
        }
    }
    assert!(sse.ended().await);
}

#[tokio::test]
async fn write_delay_sends_queued_events_in_one_write() {
    use tokio::io::AsyncWriteExt;
    // The longest delay allowed, so that three publishes surely fit in it.
    let s = start(&["--write-delay", "1s"]).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /sse?channels=batched HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The head, `retry` and the id-only event are not delayed.
    read_until(&mut tcp, "head and first events", |got| {
        let text = String::from_utf8_lossy(got);
        let (head, events) = text.split_once("\r\n\r\n")?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        (events.matches("\n\n").count() >= 2).then_some(())
    })
    .await;

    // All three come in one read: one write after the delay.
    let (ids, read) = publish_held_then_read(&s, "sse", &mut tcp).await;
    let text = String::from_utf8_lossy(&read);
    let got: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).expect("JSON data")["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        got, ids,
        "one read held the three events, in order: {text:?}"
    );
}

/// A one-channel stream's deliveries are written by the fan-out while the
/// stream's task waits (docs/architecture.md, "The lane"). A client that
/// stops reading fills its socket: a lane write then goes in part or not at
/// all, the task takes over (the rest of an event first, heartbeats between
/// whole events), and the lane again once the client reads. What the client
/// gets must be every event, whole, once, in order.
#[tokio::test]
async fn a_stream_that_stops_reading_gets_every_event_whole_and_in_order() {
    stalled_stream(0).await;
}

/// The same on a channel of more subscribers than the fan-out writes
/// itself: its open lanes are written by the flush tasks, in slices
/// (docs/architecture.md, "The lane"), and the stalled stream's partial
/// writes go back to its task from there. The other streams, which read,
/// get every message once and in order too.
#[tokio::test]
async fn a_stream_of_a_wide_channel_that_stops_reading_gets_every_event_whole_and_in_order() {
    stalled_stream(12).await;
}

/// One raw stream of channel `stall` stops reading while 16 events of
/// 512 KiB are published, with `readers` other streams that read.
async fn stalled_stream(readers: usize) {
    use tokio::io::AsyncWriteExt;
    let s = start(&["--sse-heartbeat", "100ms", "--max-message-bytes", "1048576"]).await;
    let mut others = Vec::new();
    for _ in 0..readers {
        others.push(sse_connect(&s, "?channels=stall", None).await);
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window, so that the server's socket is full after a few events.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /sse?channels=stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = read_until(&mut tcp, "head and first events", |got| {
        let text = String::from_utf8_lossy(got);
        let (_, events) = text.split_once("\r\n\r\n")?;
        (events.matches("\n\n").count() >= 2).then(|| got.to_vec())
    })
    .await;
    wait_metric(&s, "push_subscriptions", (1 + readers) as f64).await;

    // 16 events of 512 KiB each while the client reads nothing: more than
    // the server's socket takes (its send buffer grows to 4 MiB at most).
    let body = format!("\"{}\"", "x".repeat(512 * 1024));
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(publish(&s, "stall", &body).await);
    }
    // Counted as it comes (the stream is megabytes long).
    let mut buf = vec![0u8; 65536];
    let marker = b"event: message\n";
    let (mut found, mut scanned) = (0, 0usize);
    while found < ids.len() || !got.ends_with(b"\n\n") {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("events within the wait")
            .unwrap();
        assert!(n > 0, "stream closed early");
        got.extend_from_slice(&buf[..n]);
        let from = scanned.saturating_sub(marker.len() - 1);
        found += got[from..]
            .windows(marker.len())
            .filter(|w| w == marker)
            .count();
        scanned = got.len();
    }
    let text = String::from_utf8(got).expect("UTF-8 events");
    let (_, blocks) = text.split_once("\r\n\r\n").expect("head");

    let mut seen = Vec::new();
    for block in blocks.strip_suffix("\n\n").unwrap().split("\n\n") {
        let lines: Vec<&str> = block.lines().collect();
        match lines[..] {
            [": ping"] | ["retry: 2000"] => {}
            [id] if id.starts_with("id: ") => {}
            [id, "event: message", data] => {
                let id = id.strip_prefix("id: ").expect("id line");
                let env: Value =
                    serde_json::from_str(data.strip_prefix("data: ").expect("data line"))
                        .unwrap_or_else(|e| panic!("a whole event's JSON: {e}"));
                assert_eq!(env["id"], id, "the cursor is the message's id");
                assert_eq!(env["data"].as_str().map(str::len), Some(512 * 1024));
                seen.push(id.to_string());
            }
            _ => panic!("not a whole event: {:?}", &block[..block.len().min(120)]),
        }
    }
    assert_eq!(seen, ids, "every event once, in order");

    // Read again: the next delivery arrives as before.
    let next = publish(&s, "stall", "17").await;
    read_until(&mut tcp, "the next event", |got| {
        String::from_utf8_lossy(got)
            .contains(&format!("id: {next}\n"))
            .then_some(())
    })
    .await;
    ids.push(next);
    for mut other in others {
        let mut got = Vec::new();
        while got.len() < ids.len() {
            let m = other.next_message().await;
            got.push(m["id"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(got, ids, "a reading stream: every event once, in order");
    }
    all_delivered_none_kicked(&s, "sse", (17 * (1 + readers)) as f64).await;
}
