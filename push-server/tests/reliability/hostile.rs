//! Slow and hostile clients, each bounded by a documented timeout or limit
//! (docs/reliability.md): slow-loris headers (`HEADER_READ_TIMEOUT`, 10 s),
//! a WebSocket or SSE client that never reads (`outbound_queue`, then
//! `idle_timeout` on writes and `TCP_USER_TIMEOUT`), and a client that opens
//! and drops connections in a tight loop (no leak: gauge back to 0, file
//! descriptors and threads back to their baseline).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use push_server::HEADER_READ_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::common::*;
use crate::rawws::*;

/// Reads until the peer closes; returns how long that took, or `None` if it
/// stayed open for `limit`.
async fn closed_after(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), tcp.read(&mut buf)).await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slow_loris_headers_are_cut_at_the_header_read_timeout() {
    let s = start(&[]).await;
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    // Measured with hyper 1.12: a connection that never sends a byte is
    // closed after twice the header-read timeout, not once (the timer is
    // armed again after the first expiry of an empty read); still bounded.
    let silent_limit = 2 * HEADER_READ_TIMEOUT + Duration::from_secs(3);
    // Ten connections trickle one header byte a second and never finish;
    // two more send nothing at all.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            if i >= 10 {
                return closed_after(&mut tcp, silent_limit).await;
            }
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                if tcp.write_all(b"X").await.is_err() {
                    return Some(start.elapsed());
                }
                match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                    Ok(Ok(_)) => {} // a 408, then the close
                    Err(_) => {}
                }
                if start.elapsed() > limit {
                    return None;
                }
            }
        }));
    }
    // Meanwhile the node serves everyone else.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let r = client().get(s.http("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    eprintln!("slow-loris connections closed after: {results:?} (last two sent nothing)");
    for (i, took) in results.iter().enumerate() {
        let bound = if i >= 10 { silent_limit } else { limit };
        let took = took.unwrap_or_else(|| panic!("slow-loris connection {i} outlived {bound:?}"));
        assert!(took <= bound, "connection {i} closed after {took:?}");
    }
}

#[tokio::test]
async fn a_websocket_that_never_reads_is_closed_and_others_get_everything() {
    let s = start(&[
        "--heartbeat",
        "1s",
        "--idle-timeout",
        "3s",
        "--outbound-queue",
        "64",
        "--history-size",
        "0",
    ])
    .await;
    // A healthy subscriber that reads everything.
    let (mut good, _) = tokio_tungstenite::connect_async(s.ws_url("/ws?channels=flood"))
        .await
        .unwrap();
    // Two that never read: one silent, one that keeps sending frames so
    // that the idle timeout never fires and only the queue bound or the
    // write timeout can end it.
    let mut silent = RawWs::connect(s.addr, "/ws?channels=flood").await.unwrap();
    let mut chatty = RawWs::connect(s.addr, "/ws?channels=flood").await.unwrap();
    let chat = tokio::spawn(async move {
        for _ in 0..200 {
            if chatty.send(&Frame::new(PONG, vec![])).await.is_err() {
                return chatty;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        chatty
    });
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        // `good` is returned: it must stay connected to the end.
        while ids.len() < 2000 {
            match tokio::time::timeout(WAIT, good.next()).await {
                Ok(Some(Ok(WsMsg::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "message" {
                        ids.push(id_pair(v["id"].as_str().unwrap()));
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("healthy subscriber lost its stream: {other:?}"),
            }
        }
        (ids, good)
    });
    let body = format!("\"{}\"", "x".repeat(4000));
    let c = client();
    let started = Instant::now();
    for _ in 0..2000 {
        let r = c
            .post(s.http("/api/v1/channels/flood/messages"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (ids, _good) = reader.await.unwrap();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    // Only the healthy subscriber is left, within idle_timeout (3 s) plus
    // the close handshake's 1 s.
    let deadline = started + Duration::from_secs(20);
    loop {
        let open = metric(&s, "push_connections{transport=\"ws\"}").await;
        if open == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} WebSocket connections still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "non-reading WebSockets closed {:?} after the flood began; slow-consumer kicks: {}",
        started.elapsed(),
        metric(&s, "push_slow_consumer_disconnects_total").await
    );
    drop(silent.send(&Frame::text("{}")).await);
    let mut chatty = chat.await.unwrap();
    assert!(chatty.closed_within(Duration::from_secs(5)).await.is_ok());
}

#[tokio::test]
async fn an_sse_client_that_never_reads_is_closed() {
    let s = start(&[
        "--heartbeat",
        "1s",
        "--idle-timeout",
        "3s",
        "--outbound-queue",
        "64",
        "--history-size",
        "0",
    ])
    .await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /sse?channels=flood HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Shrink our receive buffer's effect: never read a byte.
    let mut healthy = tokio_tungstenite::connect_async(s.ws_url("/ws?channels=flood"))
        .await
        .unwrap()
        .0;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 2000 {
            match tokio::time::timeout(WAIT, healthy.next()).await {
                Ok(Some(Ok(WsMsg::Text(t)))) if t.contains("\"message\"") => n += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("healthy subscriber lost its stream: {other:?}"),
            }
        }
    });
    let body = format!("\"{}\"", "x".repeat(4000));
    let c = client();
    for _ in 0..2000 {
        let r = c
            .post(s.http("/api/v1/channels/flood/messages"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    reader.await.unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let open = metric(&s, "push_connections{transport=\"sse\"}").await;
        if open == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SSE client that never reads is still counted after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "non-reading SSE client released {:?} after the flood",
        started.elapsed()
    );
    drop(tcp);
}

/// One hostile connection of kind `i % 6`.
async fn churn_once(s: &TestServer, i: usize) {
    let addr = s.addr;
    match i % 7 {
        // WebSocket, dropped without a close frame.
        0 => {
            if let Ok(mut ws) = RawWs::connect(addr, "/ws?channels=churn").await {
                let _ = ws.next_within(Duration::from_millis(200)).await;
            }
        }
        // WebSocket, closed properly.
        1 => {
            if let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(s.ws_url("/ws?channels=churn")).await
            {
                let _ = ws.close(None).await;
            }
        }
        // SSE, dropped after the first event.
        2 => {
            let _ = raw_http(addr, b"GET /sse?channels=churn HTTP/1.1\r\nHost: x\r\n\r\n").await;
        }
        // TCP connect and close at once.
        3 => drop(TcpStream::connect(addr).await),
        // Half a request, then gone.
        4 => {
            if let Ok(mut tcp) = TcpStream::connect(addr).await {
                let _ = tcp.write_all(b"POST /api/v1/channels/churn/messages HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc").await;
            }
        }
        // A request line cut short of telling its path, then gone.
        5 => {
            if let Ok(mut tcp) = TcpStream::connect(addr).await {
                let _ = tcp.write_all(b"GET /s").await;
            }
        }
        // A WebSocket handshake cut in the middle.
        _ => {
            if let Ok(mut tcp) = TcpStream::connect(addr).await {
                let _ = tcp
                    .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                    .await;
            }
        }
    }
}

#[tokio::test]
async fn connection_churn_leaks_nothing() {
    let (proc_, s) = spawn(&["--heartbeat", "1s", "--idle-timeout", "3s"]).await;
    let pid = proc_.pid();
    // Warm up, then take the baseline.
    for i in 0..60 {
        churn_once(&s, i).await;
    }
    wait_no_connections(&s, WAIT).await.expect("warm-up closed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_stats(pid);

    let rounds = std::env::var("RELIABILITY_CHURN")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000usize);
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let s = TestServer {
                addr: s.addr,
                server: None,
            };
            tokio::spawn(async move {
                let mut i = w;
                while i < rounds {
                    churn_once(&s, i).await;
                    i += 16;
                }
            })
        })
        .collect();
    // Publishing goes on during the churn, from one keep-alive client as a
    // backend would (the churn, not the publisher, opens the connections).
    let publisher = client();
    let url = s.http("/api/v1/channels/churn/messages");
    let mut slowest = Duration::ZERO;
    for n in 0..100 {
        let t = Instant::now();
        let resp = publisher
            .post(&url)
            .header("content-type", "application/json")
            .body("1")
            .send()
            .await
            .unwrap_or_else(|e| panic!("publish {n} during the churn: {e}"));
        assert_eq!(resp.status(), 200, "publish {n} during the churn");
        slowest = slowest.max(t.elapsed());
    }
    for w in workers {
        w.await.unwrap();
    }
    let churn_time = started.elapsed();
    let peak = proc_stats(pid);
    // Abandoned half-requests end at the header-read timeout (10 s).
    let settle = HEADER_READ_TIMEOUT + Duration::from_secs(5);
    wait_no_connections(&s, settle)
        .await
        .expect("connections gauge back to 0");
    let deadline = Instant::now() + settle;
    let after = loop {
        let now = proc_stats(pid);
        if now.fds <= before.fds + 4 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "churn: {rounds} connections in {churn_time:?}, slowest publish {slowest:?}; before {before:?}, peak {peak:?}, after {after:?}"
    );
    assert!(
        after.fds <= before.fds + 4,
        "file descriptors leak: {before:?} → {after:?}"
    );
    assert!(
        after.threads <= before.threads + 2,
        "threads grow: {before:?} → {after:?}"
    );
    assert_eq!(metric(&s, "push_subscriptions").await, 0.0);
}
