//! Subscriber connections: WebSocket (tokio-tungstenite client) or SSE (raw TCP, a minimal
//! HTTP/1.1 reader). Each subscriber is one task that reads until the process ends; all it
//! does per message is find the marker and account for it (see `stats`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{parse_head, Chunked};
use crate::net::{connect, SourceAddrs};
use crate::stats::{Shared, SubscriberState};
use crate::target::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Everything a subscriber task needs.
pub struct SubscriberSpec {
    pub transport: Transport,
    pub url: Template,
    /// Channel names, indexed by channel number.
    pub channels: Arc<Vec<String>>,
    pub sources: SourceAddrs,
    /// Caps concurrent handshakes, so connection storms do not overflow the listen backlog.
    pub connect_permits: Arc<Semaphore>,
    pub connect_timeout: Duration,
}

/// Starts subscriber `id` on channel `channel`.
pub fn spawn(spec: Arc<SubscriberSpec>, shared: Arc<Shared>, id: usize, channel: usize) {
    tokio::spawn(async move {
        let permit = spec.connect_permits.clone().acquire_owned().await;
        let opened = tokio::time::timeout(spec.connect_timeout, open(&spec, id, channel)).await;
        drop(permit);
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return fail_connect(&shared, e),
            Err(_) => return fail_connect(&shared, "connect/handshake timed out".into()),
        };
        shared.connected.fetch_add(1, Relaxed);
        let mut state = SubscriberState::new(id, channel);
        let ended = match conn {
            Conn::Ws(ws) => read_ws(ws, &shared, &mut state).await,
            Conn::Sse(sse) => read_sse(sse, &shared, &mut state).await,
        };
        shared.disconnected.fetch_add(1, Relaxed);
        shared.note_error(format!("subscriber {id}: {ended}"));
    });
}

fn fail_connect(shared: &Shared, e: String) {
    shared.connect_failed.fetch_add(1, Relaxed);
    shared.note_error(e);
}

enum Conn {
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    Sse(SseConn),
}

async fn open(spec: &SubscriberSpec, id: usize, channel: usize) -> Result<Conn, String> {
    let name = &spec.channels[channel];
    let source = spec.sources.for_conn(spec.url.addr, id);
    let stream = connect(spec.url.addr, source)
        .await
        .map_err(|e| format!("connect {} from {source:?}: {e}", spec.url.addr))?;
    match spec.transport {
        Transport::Ws => {
            // Small buffers: with thousands of connections, tungstenite's 128 KiB default read
            // buffer would make the generator's memory the story.
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_write_buffer_size(64 * 1024);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                spec.url.url_for(name),
                stream,
                Some(config),
            )
            .await
            .map_err(|e| format!("websocket handshake: {e}"))?;
            Ok(Conn::Ws(Box::new(ws)))
        }
        Transport::Sse => SseConn::open(stream, &spec.url, name).await.map(Conn::Sse),
    }
}

async fn read_ws(
    mut ws: Box<tokio_tungstenite::WebSocketStream<TcpStream>>,
    shared: &Shared,
    state: &mut SubscriberState,
) -> String {
    // Reading also sends tungstenite's queued Pong replies, so server heartbeats are answered.
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => state.on_payload(shared, text.as_bytes()),
            Ok(Message::Binary(bin)) => state.on_payload(shared, &bin),
            Ok(Message::Close(frame)) => return format!("closed by server: {frame:?}"),
            Ok(_) => {}
            Err(e) => return format!("websocket error: {e}"),
        }
    }
    "websocket ended".into()
}

/// An SSE response whose head has been read.
struct SseConn {
    stream: TcpStream,
    chunked: Option<Chunked>,
    /// Body bytes read along with the head.
    leftover: Vec<u8>,
}

impl SseConn {
    async fn open(mut stream: TcpStream, url: &Template, channel: &str) -> Result<Self, String> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            url.path_for(channel),
            url.authority
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sse request: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("sse response: {e}"))?
                == 0
            {
                return Err("sse: connection closed before response head".into());
            }
            if let Some(head) = parse_head(&buf).map_err(|e| format!("sse: {e}"))? {
                if head.status != 200 {
                    let body = String::from_utf8_lossy(&buf[head.len..]);
                    return Err(format!("sse: status {} {}", head.status, body.trim()));
                }
                let leftover = buf.split_off(head.len);
                return Ok(Self {
                    stream,
                    chunked: head.chunked.then(Chunked::default),
                    leftover,
                });
            }
        }
    }
}

async fn read_sse(mut conn: SseConn, shared: &Shared, state: &mut SubscriberState) -> String {
    // `raw` holds what the socket gave, `body` the de-chunked event stream not yet split into
    // complete lines.
    let mut raw = std::mem::take(&mut conn.leftover);
    let mut body: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match conn.chunked.as_mut() {
            Some(dechunk) => {
                if let Err(e) = dechunk.feed(&raw, &mut body) {
                    return format!("sse chunked framing: {e}");
                }
                if dechunk.done() {
                    return "sse stream ended by server".into();
                }
            }
            None => body.extend_from_slice(&raw),
        }
        raw.clear();
        scan_lines(&mut body, shared, state);
        match conn.stream.read_buf(&mut raw).await {
            Ok(0) => return "sse connection closed by server".into(),
            Ok(_) => {}
            Err(e) => return format!("sse read: {e}"),
        }
    }
}

/// Hands every complete `data:` line to the state and keeps an incomplete last line.
fn scan_lines(body: &mut Vec<u8>, shared: &Shared, state: &mut SubscriberState) {
    let mut start = 0;
    while let Some(nl) = body[start..].iter().position(|&b| b == b'\n') {
        let line = &body[start..start + nl];
        if line.starts_with(b"data:") {
            state.on_payload(shared, line);
        }
        start += nl + 1;
    }
    body.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker::Marker;

    #[test]
    fn sse_lines_split_anywhere() {
        let shared = Shared::new(1, 1);
        shared.begin_window(1);
        let mut state = SubscriberState::new(0, 0);
        let mut stream = b"retry: 1000\n\n: ping\n\n".to_vec();
        for seq in 0..3 {
            let mut payload = Vec::new();
            Marker {
                run: shared.run,
                window: 1,
                seq,
                sent_us: 0,
            }
            .encode(64, &mut payload);
            stream.extend_from_slice(b"id: 1-0\nevent: message\ndata: {\"data\":\"");
            stream.extend_from_slice(&payload);
            stream.extend_from_slice(b"\"}\n\n");
        }
        let mut body = Vec::new();
        for piece in stream.chunks(7) {
            body.extend_from_slice(piece);
            scan_lines(&mut body, &shared, &mut state);
        }
        assert!(body.is_empty());
        assert_eq!(shared.received.load(Relaxed), 3);
    }
}
