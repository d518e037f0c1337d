//! Property-based tests of the WebSocket protocol with a raw client:
//! well-formed frames of any content get an answer or an `error` frame and
//! the connection stays open; malformed WebSocket framing closes the
//! connection promptly (RFC 6455 requires it) and nothing else is affected.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::common::*;
use crate::props::{arb_channel, arb_id, arb_json, cases, check, unique};
use crate::rawws::*;

/// Server → client frame types (docs/protocol.md).
const KNOWN: &[&str] = &[
    "welcome",
    "subscribed",
    "unsubscribed",
    "message",
    "published",
    "error",
    "pong",
];

/// A text payload: protocol frames with random fields, other JSON, any text.
fn arb_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("subscribe".to_string()),
        Just("unsubscribe".to_string()),
        Just("publish".to_string()),
        Just("ack".to_string()),
        Just("ping".to_string()),
        ".{0,10}",
    ];
    let field = prop_oneof![
        arb_channel().prop_map(Value::String),
        arb_id().prop_map(Value::String),
        arb_json(),
    ];
    let protocol = (
        kind,
        prop::option::of(field.clone()),
        prop::option::of(field.clone()),
        prop::option::of(field.clone()),
        prop::option::of(field),
    )
        .prop_map(|(kind, channel, since, data, ack)| {
            let mut f = json!({ "type": kind });
            for (k, v) in [
                ("channel", channel),
                ("since", since),
                ("data", data),
                ("ack", ack),
            ] {
                if let Some(v) = v {
                    f[k] = v;
                }
            }
            f.to_string()
        });
    prop_oneof![
        4 => protocol,
        2 => arb_json().prop_map(|v| v.to_string()),
        2 => ".{0,200}",
        1 => (1usize..300).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => (900usize..1100).prop_map(|n| format!("{{\"type\":\"publish\",\"channel\":\"big\",\"data\":\"{}\"}}", "x".repeat(n))),
    ]
}

/// A sequence of frames a well-behaved WebSocket client may send.
fn arb_valid_frames() -> impl Strategy<Value = Vec<Frame>> {
    let one = prop_oneof![
        6 => arb_text().prop_map(|t| vec![Frame::text(&t)]),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| vec![Frame::new(BINARY, b)]),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(|b| vec![Frame::new(PING, b)]),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(|b| vec![Frame::new(PONG, b)]),
        // A text message in fragments, with a Ping between two of them.
        2 => (arb_text(), 1usize..4, prop::bool::ANY).prop_map(|(t, parts, ping)| {
            let bytes = t.into_bytes();
            let size = bytes.len().div_ceil(parts).max(1);
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let mut frames = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                let mut f = Frame::new(if i == 0 { TEXT } else { CONTINUATION }, c.to_vec());
                f.fin = i + 1 == chunks.len();
                frames.push(f);
                if ping && i == 0 && chunks.len() > 1 {
                    frames.push(Frame::new(PING, b"mid".to_vec()));
                }
            }
            if frames.is_empty() {
                frames.push(Frame::text(""));
            }
            frames
        }),
    ];
    prop::collection::vec(one, 1..6).prop_map(|v| v.concat())
}

#[test]
fn well_formed_frames_get_answers_and_the_connection_stays() {
    check(
        "ws frames",
        cases(128),
        &["--max-message-bytes", "1024", "--publish-rate-limit", "0"],
        arb_valid_frames,
        |addr, frames| async move {
            let mut ws = RawWs::connect(addr, "/ws").await?;
            let welcome = ws.next_json().await?;
            if welcome["type"] != "welcome" {
                return Err(format!("first frame {welcome}"));
            }
            for f in &frames {
                ws.send(f).await.map_err(|e| format!("send: {e}"))?;
            }
            // A marker only this case can produce ends the answers.
            let mark = unique("mark");
            ws.send(&Frame::text(
                &json!({"type": "subscribe", "channel": mark}).to_string(),
            ))
            .await
            .map_err(|e| format!("send: {e}"))?;
            let oversized = frames
                .iter()
                .any(|f| f.opcode != PING && f.payload.len() > 1024 + 1024);
            loop {
                match ws.next().await? {
                    Got::Text(t) => {
                        let v: Value = serde_json::from_str(&t)
                            .map_err(|e| format!("server sent non-JSON {t:?}: {e}"))?;
                        let kind = v["type"].as_str().unwrap_or("");
                        if !KNOWN.contains(&kind) {
                            return Err(format!("unknown frame {v}"));
                        }
                        if kind == "error"
                            && (v["code"].as_str().is_none() || v["message"].as_str().is_none())
                        {
                            return Err(format!("error frame without code/message: {v}"));
                        }
                        if kind == "subscribed" && v["channel"] == mark.as_str() {
                            return Ok(());
                        }
                    }
                    Got::Ping(_) | Got::Pong(_) => {}
                    Got::Close(code) if oversized && code == Some(1009) => return Ok(()),
                    other => return Err(format!("after {frames:?}: connection ended: {other:?}")),
                }
            }
        },
    );
}

/// Frames RFC 6455 forbids a client to send.
fn arb_violation() -> impl Strategy<Value = (String, Vec<u8>)> {
    let payload = prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        payload.clone().prop_map(|p| {
            let mut f = Frame::new(TEXT, p);
            f.masked = false;
            ("unmasked".into(), f.encode())
        }),
        (payload.clone(), 1u8..8).prop_map(|(p, rsv)| {
            let mut f = Frame::new(BINARY, p);
            f.rsv = rsv;
            ("rsv bits".into(), f.encode())
        }),
        (
            payload.clone(),
            prop::sample::select(vec![3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
        )
            .prop_map(|(p, op)| ("reserved opcode".into(), Frame::new(op, p).encode())),
        (126usize..400)
            .prop_map(|n| ("long control".into(), Frame::new(PING, vec![1; n]).encode())),
        payload.clone().prop_map(|p| {
            let mut f = Frame::new(PING, p);
            f.fin = false;
            ("fragmented control".into(), f.encode())
        }),
        payload.clone().prop_map(|p| (
            "lone continuation".into(),
            Frame::new(CONTINUATION, p).encode()
        )),
        payload.clone().prop_map(|p| {
            let mut first = Frame::new(TEXT, b"{\"type\":".to_vec());
            first.fin = false;
            let mut bytes = first.encode();
            bytes.extend(Frame::new(TEXT, p).encode());
            ("new message inside a fragmented one".into(), bytes)
        }),
        prop::collection::vec(0x80u8..=0xff, 1..20)
            .prop_filter("not UTF-8", |p| std::str::from_utf8(p).is_err())
            .prop_map(|p| ("text not UTF-8".into(), Frame::new(TEXT, p).encode())),
        (2049usize..5000).prop_map(|n| (
            "oversized frame".into(),
            Frame::new(TEXT, vec![b' '; n]).encode()
        )),
        (2049u64..u64::MAX / 2).prop_map(|n| {
            // Only the header of a huge frame: the server must not wait for
            // (or allocate) the payload.
            let mut h = vec![0x82, 0xFF];
            h.extend_from_slice(&n.to_be_bytes());
            h.extend_from_slice(&[1, 2, 3, 4]);
            ("huge length header".into(), h)
        }),
        (3usize..6).prop_map(|n| {
            // A message over the limit in small fragments.
            let mut bytes = Vec::new();
            for i in 0..n {
                let mut f = Frame::new(if i == 0 { TEXT } else { CONTINUATION }, vec![b' '; 1000]);
                f.fin = i + 1 == n;
                bytes.extend(f.encode());
            }
            ("oversized fragmented message".into(), bytes)
        }),
    ]
}

#[test]
fn protocol_violations_close_the_connection_promptly() {
    check(
        "ws violations",
        cases(128),
        &["--max-message-bytes", "1024"],
        arb_violation,
        |addr, (what, bytes)| async move {
            // A bystander on the same node must not notice.
            let mut other = RawWs::connect(addr, "/ws?channels=bystander").await?;
            let mut ws = RawWs::connect(addr, "/ws").await?;
            ws.next_json().await?;
            let _ = ws.send_raw(&bytes).await;
            ws.closed_within(Duration::from_secs(5))
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            other.next_json().await?; // welcome
            other.next_json().await?; // subscribed
            other
                .send(&Frame::text(r#"{"type":"ping"}"#))
                .await
                .map_err(|e| e.to_string())?;
            let pong = other.next_json().await?;
            if pong["type"] != "pong" {
                return Err(format!("bystander got {pong}"));
            }
            Ok(())
        },
    );
}

#[test]
fn handshake_queries_and_tokens() {
    let query = || {
        prop_oneof![
            arb_channel().prop_map(|c| format!("channels={}", pct(c.as_bytes()))),
            prop::collection::vec(arb_channel(), 0..5)
                .prop_map(|cs| format!("channels={}", pct(cs.join(",").as_bytes()))),
            ".{0,40}".prop_map(|t| format!("channels=a&token={}", pct(t.as_bytes()))),
            "[a-z=&%0-9,]{0,40}",
        ]
    };
    check(
        "ws handshake",
        cases(128),
        &["--jwt-secret", "a-secret-for-tests"],
        query,
        |addr, query| async move {
            let path = format!("/ws?{query}");
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            let r = raw_http(addr, req.as_bytes()).await?;
            // No valid token can be generated: always refused, with JSON.
            match r.status {
                400 | 401 => r.error_code().map(|_| ()),
                _ => Err(format!("{path}: {r:?}")),
            }
        },
    );
}
