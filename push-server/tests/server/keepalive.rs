//! A refused request whose body the handler did not read (issue 16): a raw
//! keep-alive client sends the whole body, reads the refusal, and then either
//! sees `Connection: close` or may send its next request on the same
//! connection, which must succeed. Never a silent close, never a next
//! request left hanging.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// One HTTP/1.1 response read off a raw socket.
struct Answer {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).expect("JSON error body");
        v["error"]["code"].as_str().expect("error code").to_string()
    }
}

/// Reads one response with a `content-length` body; `buf` keeps whatever
/// follows it.
async fn read_answer(tcp: &mut TcpStream, buf: &mut Vec<u8>, what: &str) -> Answer {
    let mut chunk = vec![0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Answer {
                    status,
                    headers,
                    body,
                };
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
        assert!(n > 0, "{what}: connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `head` + a body of `body_len` bytes whole (written while the answer
/// is read, as a pooled client does), expects `status`/`code`, then proves
/// the connection is either announced closed or still good for a publish.
async fn refused_then_next_request(
    s: &TestServer,
    head: &str,
    body_len: usize,
    status: u16,
    code: &str,
) {
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut request = format!("{head}content-length: {body_len}\r\n\r\n").into_bytes();
    // A JSON string, so that the body is valid whatever the route reads.
    request.push(b'"');
    request.resize(request.len() + body_len - 2, b'a');
    request.push(b'"');
    let (mut rd, mut wr) = tcp.split();
    let write = async {
        wr.write_all(&request).await.expect("request written whole");
    };
    let mut buf = Vec::new();
    let read = async {
        // Read through the split half: the answer may come before the body
        // is all written.
        let mut chunk = vec![0u8; 65536];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            let n = tokio::time::timeout(WAIT, rd.read(&mut chunk))
                .await
                .expect("first answer in time")
                .expect("read first answer");
            assert!(n > 0, "connection closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::join!(write, read);
    let first = read_answer(&mut tcp, &mut buf, "refusal").await;
    assert_eq!(
        first.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.code(), code);

    if first.closes() {
        // Announced: the server closes after the answer (EOF or reset).
        let mut rest = [0u8; 1024];
        loop {
            match tokio::time::timeout(WAIT, tcp.read(&mut rest)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => panic!("Connection: close announced but the connection stays open"),
            }
        }
    }
    // Kept alive: the next request on this connection must be answered.
    let next = "POST /api/v1/channels/after/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n\
                content-length: 2\r\n\r\n42";
    tcp.write_all(next.as_bytes()).await.expect("next request");
    let second = read_answer(&mut tcp, &mut buf, "next request on the kept connection").await;
    assert_eq!(
        second.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&second.body)
    );
}

#[tokio::test]
async fn too_large_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 300_000, 413, "message_too_large").await;
}

#[tokio::test]
async fn bad_request_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    // The channel is refused before the body is read.
    let head = "POST /api/v1/channels/bad%20name/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 60_000, 400, "invalid_channel").await;
}

#[tokio::test]
async fn unauthorized_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    // No key: refused before the body is read.
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                content-type: application/json\r\n";
    refused_then_next_request(&s, head, 60_000, 401, "unauthorized").await;
}

#[tokio::test]
async fn unauthorized_batch_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/publish HTTP/1.1\r\nhost: push\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 300_000, 401, "unauthorized").await;
}

#[tokio::test]
async fn body_beyond_the_drain_bound_is_answered_with_connection_close() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                content-type: application/json\r\n";
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    // Announces 64 MiB, sends only the head: the server must not wait for
    // (or read) all of it before refusing.
    let request = format!("{head}content-length: {}\r\n\r\n\"aaaa", 64 << 20);
    tcp.write_all(request.as_bytes()).await.expect("head");
    let mut buf = Vec::new();
    let answer = read_answer(&mut tcp, &mut buf, "refusal of a huge body").await;
    assert_eq!(answer.status, 401);
    assert!(answer.closes(), "{:?}", answer.headers);
}

#[tokio::test]
async fn sse_as_a_later_request_of_a_keep_alive_connection() {
    // Not the first request of its connection: served through hyper (the
    // raw path only takes fresh connections), with the same events.
    let s = start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: push\r\n\r\n")
        .await
        .expect("first request");
    let mut buf = Vec::new();
    let first = read_answer(&mut tcp, &mut buf, "healthz").await;
    assert_eq!(first.status, 200);
    tcp.write_all(b"GET /sse?channels=later HTTP/1.1\r\nhost: push\r\n\r\n")
        .await
        .expect("stream request");
    let head = read_until(&mut tcp, "stream opening", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("retry: 2000").then(|| text.into_owned())
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let id = publish(&s, "later", "42").await;
    let events = read_until(&mut tcp, "the published message", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("event: message").then(|| text.into_owned())
    })
    .await;
    assert!(events.contains(&format!("\"id\":\"{id}\"")), "{events}");
}
