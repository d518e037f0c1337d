//! Helpers of the reliability tests: an in-process server or the built
//! binary, a raw HTTP/1.1 client that sends exactly the bytes it is given,
//! metrics, and process statistics from `/proc`.
//!
//! Copied and trimmed from `tests/server/common.rs` on purpose: the two test
//! binaries evolve independently.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push_server::{Config, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single request or awaited event may take: past this the
/// request "hung", which is a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// The built server binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_push-server");

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

/// Starts a server in the current runtime on a free loopback port.
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

/// A multi-threaded runtime for the synchronous proptest runners.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(64 << 20)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built binary, killed on drop.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Starts the binary on a free port and waits for `/healthz`.
pub async fn spawn(args: &[&str]) -> (Proc, TestServer) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("PUSH_LISTEN", format!("127.0.0.1:{port}"))
        .env("PUSH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Proc(cmd.spawn().expect("spawn push-server"));
    let s = TestServer {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        server: None,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = client().get(s.http("/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "push-server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, s)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// A parsed HTTP response from [`raw_http`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked); for an event stream, what arrived first.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks the error shape of docs/protocol.md and returns the code.
    pub fn error_code(&self) -> Result<String, String> {
        if self.header("content-type") != Some("application/json") {
            return Err(format!("error without JSON content type: {self:?}"));
        }
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("error body is not JSON ({e}): {self:?}"))?;
        let code = v["error"]["code"].as_str().unwrap_or("");
        let message = v["error"]["message"].as_str().unwrap_or("");
        if code.is_empty() || message.is_empty() {
            return Err(format!("error body lacks code/message: {v}"));
        }
        Ok(code.to_string())
    }

    /// The outcome every bad input must have: a success, or a 4xx (or 503)
    /// with the JSON error shape. Never another 5xx.
    pub fn check_answer(&self) -> Result<(), String> {
        match self.status {
            200..=299 => Ok(()),
            400..=499 | 503 => self.error_code().map(|_| ()),
            other => Err(format!("status {other}: {self:?}")),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `request` as is on a new connection and reads the answer, all
/// within [`WAIT`]. An event stream is read until its first event.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> Result<RawResponse, String> {
    tokio::time::timeout(WAIT, raw_http_inner(addr, request))
        .await
        .map_err(|_| format!("no answer within {WAIT:?} (hung)"))?
}

async fn raw_http_inner(addr: SocketAddr, request: &[u8]) -> Result<RawResponse, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The server may answer (413) and close before reading the whole body.
    let _ = tcp.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed without an answer: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = RawResponse {
        status,
        headers,
        body: buf[header_end + 4..].to_vec(),
    };
    let streaming = resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = resp.header("content-length").and_then(|l| l.parse().ok());
    loop {
        if streaming && find(&resp.body, b"\n\n").is_some() {
            break;
        }
        if let Some(len) = length {
            if resp.body.len() >= len {
                resp.body.truncate(len);
                break;
            }
        }
        if chunked && find(&resp.body, b"\r\n0\r\n\r\n").is_some() {
            break;
        }
        if (length == Some(0) || (!chunked && length.is_none() && status == 101)) && !streaming {
            break;
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            break;
        }
        resp.body.extend_from_slice(&chunk[..n]);
    }
    if chunked {
        resp.body = dechunk(&resp.body);
    }
    Ok(resp)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(body, b"\r\n") {
        let size = std::str::from_utf8(&body[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        body = &body[i + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(body.len());
        out.extend_from_slice(&body[..take]);
        body = &body[take..];
        body = body.strip_prefix(b"\r\n").unwrap_or(body);
    }
    out
}

/// Builds a request with `Connection: close` and, for a body, its length.
pub fn request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
        .into_bytes();
    for (n, v) in headers {
        r.extend_from_slice(n.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if method == "POST" {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// Percent-encodes every byte outside the unreserved set.
pub fn pct(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Publishes `body` as JSON; returns the id.
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
    v["id"].as_str().expect("id").to_string()
}

/// The `/metrics` page.
pub async fn metrics_text(s: &TestServer) -> String {
    client()
        .get(s.http("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Reads one metric sample, e.g. `push_connections{transport="ws"}`.
pub async fn metric(s: &TestServer, name: &str) -> f64 {
    let text = metrics_text(s).await;
    metric_in(&text, name).unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Open WebSocket + SSE connections.
pub async fn connections(s: &TestServer) -> f64 {
    metric(s, "push_connections{transport=\"ws\"}").await
        + metric(s, "push_connections{transport=\"sse\"}").await
}

/// Polls until no WebSocket or SSE connection is open, within `within`.
pub async fn wait_no_connections(s: &TestServer, within: Duration) -> Result<Duration, f64> {
    let start = Instant::now();
    loop {
        let open = connections(s).await;
        if open == 0.0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(open);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Resident memory, open file descriptors and threads of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    ProcStats {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

/// Parses `<ms>-<seq>` for ordering checks.
pub fn id_pair(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').expect("id form");
    (a.parse().expect("ms"), b.parse().expect("seq"))
}

/// Sends SIGTERM (or another signal) to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}
