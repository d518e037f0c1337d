//! Test helpers: start a real server (in-process on port 0, or the built
//! binary), and talk to it with real WebSocket, SSE and HTTP clients. The
//! Redis test binary includes this file too (`#[path]`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use push_server::{Config, Server};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single awaited event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Option<Server>,
}

impl TestServer {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

/// Starts a server in this test's runtime on a free loopback port.
pub async fn start(args: &[&str]) -> TestServer {
    let mut argv = vec!["push-server", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let config = Config::load_from(argv).expect("config");
    let server = Server::start(config).await.expect("server starts");
    TestServer {
        addr: server.local_addr(),
        server: Some(server),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Publishes `body` (JSON) and returns the id.
pub async fn publish(s: &TestServer, channel: &str, body: &str) -> String {
    let resp = client()
        .post(s.http(&format!("/api/v1/channels/{channel}/messages")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("publish request");
    let status = resp.status();
    let text = resp.text().await.expect("publish answer");
    assert_eq!(status, 200, "publish failed: {text}");
    let v: Value = serde_json::from_str(&text).expect("publish json");
    assert_eq!(v["channel"], channel);
    v["id"].as_str().expect("id").to_string()
}

/// Publishes the JSON numbers `0..n` to `channel`, in order; their ids.
pub async fn publish_numbers(s: &TestServer, channel: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(publish(s, channel, &i.to_string()).await);
    }
    ids
}

/// Asserts the JSON error shape and returns the code.
pub async fn error_code(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.expect("error json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().expect("code").to_string()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(s: &TestServer, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(s.ws_url(&format!("/ws{query}")))
        .await
        .expect("ws connect");
    ws
}

/// Connects and consumes `welcome` and the `subscribed` of each URL channel.
pub async fn ws_subscribed(s: &TestServer, channels: &str) -> Ws {
    let mut ws = ws_connect(s, &format!("?channels={channels}")).await;
    assert_eq!(ws_next(&mut ws).await["type"], "welcome");
    for ch in channels.split('&').next().unwrap_or("").split(',') {
        let f = ws_next(&mut ws).await;
        assert_eq!(
            (f["type"].as_str(), f["channel"].as_str()),
            (Some("subscribed"), Some(ch)),
            "{f}"
        );
    }
    ws
}

/// The next JSON text frame (Pings are skipped; the client answers them),
/// over TLS-capable or plain client sockets alike.
pub async fn ws_next<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ws frame in time");
        match msg {
            Some(Ok(WsMsg::Text(t))) => return serde_json::from_str(&t).expect("json frame"),
            Some(Ok(WsMsg::Ping(_) | WsMsg::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(WsMsg::Text(v.to_string().into()))
        .await
        .expect("ws send");
}

/// Waits for the server to close the socket; returns the close code.
pub async fn ws_closed(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(WsMsg::Close(frame))) => return frame.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub comment: bool,
}

/// A minimal SSE reader over a real HTTP response.
pub struct Sse {
    pub resp: reqwest::Response,
    buf: String,
    /// The last `id:` seen, as a browser keeps it.
    pub last_event_id: Option<String>,
}

pub async fn sse_connect(s: &TestServer, query: &str, last_event_id: Option<&str>) -> Sse {
    let mut req = client().get(s.http(&format!("/sse{query}")));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.expect("sse request");
    assert_eq!(resp.status(), 200, "sse status");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Sse {
        resp,
        buf: String::new(),
        last_event_id: None,
    }
}

impl Sse {
    /// The next event or comment block.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Event::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        ev.comment = true;
                        ev.data = c.trim().to_string();
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => ev.id = Some(value.to_string()),
                        "event" => ev.event = Some(value.to_string()),
                        "data" => data.push(value.to_string()),
                        "retry" => ev.retry = value.parse().ok(),
                        _ => {}
                    }
                }
                if !ev.comment {
                    ev.data = data.join("\n");
                }
                if ev.id.is_some() {
                    self.last_event_id = ev.id.clone();
                }
                return ev;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("sse chunk in time");
            match chunk.expect("sse read") {
                Some(bytes) => self
                    .buf
                    .push_str(std::str::from_utf8(&bytes).expect("utf8")),
                None => panic!("sse stream ended; buffered: {:?}", self.buf),
            }
        }
    }

    /// The next `message` event's envelope, skipping comments and id-only events.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let ev = self.next().await;
            if ev.event.as_deref() == Some("message") {
                return serde_json::from_str(&ev.data).expect("envelope json");
            }
            assert!(
                ev.comment || (ev.event.is_none() && ev.data.is_empty()),
                "unexpected event {ev:?}"
            );
        }
    }

    /// Whether the stream ended (reads to the end).
    pub async fn ended(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("sse end in time")
            {
                Ok(Some(b)) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                Ok(None) | Err(_) => return true,
            }
        }
    }
}

/// Reads one metric sample, e.g. `push_connections{transport="ws"}`.
pub async fn metric(s: &TestServer, name: &str) -> f64 {
    let text = client()
        .get(s.http("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
        .trim()
        .parse()
        .expect("number")
}

/// Polls until `metric == want` (metrics move asynchronously after a close).
pub async fn wait_metric(s: &TestServer, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric(s, name).await;
        if v == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {v}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` deliveries over `transport` (`ws`, `sse`) are counted,
/// and checks that no connection was kicked as a slow consumer.
pub async fn all_delivered_none_kicked(s: &TestServer, transport: &str, n: f64) {
    let delivered = format!("push_messages_delivered_total{{transport=\"{transport}\"}}");
    wait_metric(s, &delivered, n).await;
    assert_eq!(metric(s, "push_slow_consumer_disconnects_total").await, 0.0);
}

/// Parses `<ms>-<seq>` for ordering checks.
pub fn id_pair(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').expect("id form");
    (a.parse().expect("ms"), b.parse().expect("seq"))
}

/// With a long `write_delay`: publishes three messages to `batched`, checks
/// that none was written yet (`transport`'s delivered counter is 0: the
/// delay is far longer than three publishes take, and without it the first
/// is written at once), then returns their ids and the bytes of the next
/// single read of `tcp`.
pub async fn publish_held_then_read(
    s: &TestServer,
    transport: &str,
    tcp: &mut TcpStream,
) -> (Vec<String>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let ids = publish_numbers(s, "batched", 3).await;
    assert_eq!(
        metric(
            s,
            &format!("push_messages_delivered_total{{transport=\"{transport}\"}}")
        )
        .await,
        0.0,
        "written before the delay"
    );
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the delayed batch")
        .expect("read");
    buf.truncate(n);
    (ids, buf)
}

/// Reads `tcp` until `done` finds what it waits for in everything read so
/// far (within [`WAIT`]); `what` names it in the failure.
pub async fn read_until<T>(
    tcp: &mut TcpStream,
    what: &str,
    mut done: impl FnMut(&[u8]) -> Option<T>,
) -> T {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
            .expect("read");
        assert!(n > 0, "{what}: connection closed");
        got.extend_from_slice(&buf[..n]);
        if let Some(found) = done(&got) {
            return found;
        }
    }
}

/// One HTTP/1.1 response read off a raw socket.
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).expect("JSON error body");
        v["error"]["code"].as_str().expect("error code").to_string()
    }
}

/// Reads one response with a `content-length` body; `buf` keeps whatever
/// follows it.
pub async fn read_answer(tcp: &mut TcpStream, buf: &mut Vec<u8>, what: &str) -> Answer {
    use tokio::io::AsyncReadExt;
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

/// A history page, `GET /api/v1/channels/<path_and_query>`, as JSON.
pub async fn history_page(s: &TestServer, path_and_query: &str) -> Value {
    client()
        .get(s.http(&format!("/api/v1/channels/{path_and_query}")))
        .send()
        .await
        .expect("history request")
        .json()
        .await
        .expect("history JSON")
}

/// The messages of a channel's history, oldest first.
pub async fn history_messages(s: &TestServer, channel: &str) -> Vec<Value> {
    history_page(s, &format!("{channel}/messages")).await["messages"]
        .as_array()
        .expect("messages")
        .clone()
}
