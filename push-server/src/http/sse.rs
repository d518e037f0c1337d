//! `GET /sse`: opening event streams, on the raw socket (the fast path) or,
//! for the rare stream that arrives as a later request of a keep-alive
//! connection, through hyper. Both open the same way ([`open`]) and use the
//! one origin policy; the events are [`crate::transport::sse`]'s.
//!
//! Why a raw path: a stream lives for hours and hyper keeps two 8 KiB
//! buffers (read and header write) per connection for its whole life, which
//! is most of an idle SSE connection's memory. Here the request head is read
//! into a buffer that is dropped before streaming, the response is written
//! with `Connection: close` (no chunked framing: one write per batch of
//! events), and the client's closing is noticed by a read readiness wait.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{AppState, HEADER_READ_TIMEOUT};
use crate::metrics::Transport;
use crate::node::{Lane, Wrote};
use crate::protocol::{cursor, parse_channels, Error, ErrorCode, Message, MessageId};
use crate::transport::core::{Core, Gone};
use crate::transport::sse::{self as events, EventSink, Opened};

/// Validates, authorizes and admits a stream, subscribes its channels and
/// encodes what comes first (`retry:`, resets, backlog, initial cursor).
async fn open(
    state: &AppState,
    peer: IpAddr,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Core, Opened, Vec<u8>), Error> {
    let node = &state.node;
    if node.is_draining() {
        return Err(Error::draining());
    }
    let channels = parse_channels(
        query.get("channels").map(String::as_str),
        node.config.max_channels_per_connection,
    )?;
    if channels.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidChannel,
            "channels= must name at least one channel",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.get("lastEventId").map(String::as_str))
        .filter(|s| !s.trim().is_empty());
    let since: Vec<Option<MessageId>> = match last_event_id {
        None => vec![None; channels.len()],
        Some(c) => cursor::parse(c, channels.len())
            .map_err(|e| Error::new(ErrorCode::InvalidCursor, e.to_string()))?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let principal = node.subscriber(query.get("token").map(String::as_str), headers)?;
    // One refused channel refuses the stream, before it is admitted.
    if let Some(ch) = channels.iter().find(|c| !principal.may_subscribe(c)) {
        return Err(Error::new(
            ErrorCode::Forbidden,
            format!("the token does not grant channel {ch:?}"),
        ));
    }
    let permit = node.admit(Transport::Sse, peer)?;
    let mut core = Core::new(node.clone(), principal, permit);
    let (opened, first) = events::open(&mut core, channels, since).await?;
    Ok((core, opened, first))
}

// ---- through hyper ----

/// `GET /sse?channels=a,b&token=…&lastEventId=…` through hyper. Most
/// requests take [`serve_raw`] instead; this path serves the rest. The
/// connection runs in a task of its own and hands its chunks to the body.
pub(super) async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (core, opened, first) = open(&state, peer.ip(), &query, &headers).await?;
    // One chunk in flight: hyper polls the body when the socket takes more,
    // so a client that stops reading stops the connection's writes.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let _ = tx.try_send(Bytes::from(first));
    let sink = BodySink { tx, closed: None };
    tokio::spawn(core.run(opened.with(sink), false, Vec::new()));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The events of a hyper-served stream: into its response body.
struct BodySink {
    tx: mpsc::Sender<Bytes>,
    /// Resolves when hyper dropped the body (the client is gone): kept, so
    /// that its waiter stays registered between polls.
    closed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl EventSink for BodySink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), Gone> {
        self.tx.send(Bytes::from(bytes)).await.map_err(|_| Gone)
    }

    /// One chunk for the body: copied (this path is the rare one).
    async fn write_buf<B: Buf + Send>(&mut self, buf: &mut B) -> Result<(), Gone> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.tx.send(bytes).await.map_err(|_| Gone)
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let tx = &self.tx;
        let closed = self.closed.get_or_insert_with(|| {
            let tx = tx.clone();
            Box::pin(async move { tx.closed().await })
        });
        closed.as_mut().poll(cx)
    }

    async fn finish(&mut self) {}
}

// ---- the raw socket ----

/// Serves an SSE request on the raw socket, without hyper (see the module
/// docs). The stream then runs in a task of its own, so that nothing of the
/// opening (head buffer, parsing) stays allocated beside it.
pub(super) async fn serve_raw(state: AppState, mut tcp: TcpStream, peer: SocketAddr) {
    let head = match tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Ok(head)) => head,
        Ok(Err(RawError::TooLarge)) => {
            let e = Error::new(ErrorCode::HeadersTooLarge, "request head above 16 KiB");
            return write_error(&mut tcp, e, None).await;
        }
        _ => return,
    };
    let (query, headers) = match parse_head(&head) {
        Ok(parsed) => parsed,
        Err(e) => return write_error(&mut tcp, e, None).await,
    };
    drop(head);
    let cors = state.origins.allow_origin(&headers);
    let (core, opened, first) = match open(&state, peer.ip(), &query, &headers).await {
        Ok(opened) => opened,
        Err(e) => return write_error(&mut tcp, e, cors.as_deref()).await,
    };
    drop((query, headers));
    let mut out = Vec::with_capacity(160 + first.len());
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\nconnection: close\r\n",
    );
    push_cors(&mut out, cors.as_deref());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&first);
    drop(first);
    let tcp = Arc::new(tcp);
    let mut sink = RawSink(tcp.clone());
    let limit = state.node.config.idle_timeout;
    if !matches!(
        tokio::time::timeout(limit, sink.write(out)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let mut core = core;
    if opened.channels() == 1 {
        // One channel: a delivery's event is its message's shared bytes,
        // which the fan-out may write itself (`node::hub`, the lane).
        core.set_lane(RawLane(tcp));
    }
    tokio::spawn(core.run(opened.with(sink), false, Vec::new()));
}

/// The events of a raw stream: straight onto its socket, which a stream of
/// one channel shares with its lane. Both write through `&TcpStream`, never
/// at once: the lane only while the task waits (`Receiver::claim`).
struct RawSink(Arc<TcpStream>);

/// Writes `buf` whole, vectored (up to 64 of its chunks per `writev`, as
/// tokio's `write_all_buf`): what the socket takes now, then waits for room.
/// Polled, not async: the slices stay off the connection's future, which
/// every idle stream holds (an async loop kept them there: +3.4 KiB each).
fn write_all_buf<'a, B: Buf>(
    tcp: &'a TcpStream,
    buf: &'a mut B,
) -> impl Future<Output = Result<(), Gone>> + 'a {
    std::future::poll_fn(move |cx| loop {
        while buf.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = buf.chunks_vectored(&mut slices);
            match tcp.try_write_vectored(&slices[..n]) {
                Ok(0) => return Poll::Ready(Err(Gone)),
                Ok(n) => buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Poll::Ready(Err(Gone)),
            }
        }
        if !buf.has_remaining() {
            return Poll::Ready(Ok(()));
        }
        if ready!(tcp.poll_write_ready(cx)).is_err() {
            return Poll::Ready(Err(Gone));
        }
    })
}

impl EventSink for RawSink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), Gone> {
        write_all_buf(&self.0, &mut &bytes[..]).await
    }

    async fn write_buf<B: Buf + Send>(&mut self, buf: &mut B) -> Result<(), Gone> {
        write_all_buf(&self.0, buf).await
    }

    /// Anything the client sends on an event stream is read and ignored.
    /// The socket keeps the read waker (no waiter to register per poll).
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sink = [0u8; 64];
        loop {
            // Tokio's budget makes this pending now and then, so a client
            // sending without end cannot hold the worker.
            if ready!(self.0.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match self.0.try_read(&mut sink) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                // Clears the readiness: the next poll registers the waker.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }

    async fn finish(&mut self) {
        // What tokio's `shutdown` does for a `TcpStream`, which never waits.
        let _ = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
    }
}

/// A one-channel stream's lane: a delivery's event is its message's shared
/// framed bytes (their `id:` is the message's id, the stream's whole cursor).
struct RawLane(Arc<TcpStream>);

impl Lane for RawLane {
    fn kind(&self) -> Transport {
        Transport::Sse
    }

    fn try_write(&self, msg: &Message) -> std::io::Result<Wrote> {
        let n = crate::transport::try_send(&self.0, msg.sse_framed())?;
        Ok(if n == msg.sse_framed_len() {
            Wrote::All
        } else {
            Wrote::Part(n)
        })
    }
}

enum RawError {
    TooLarge,
    Io,
}

/// Largest request head accepted on the raw SSE path.
const MAX_HEAD: usize = 16 * 1024;

async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, RawError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await.map_err(|_| RawError::Io)?;
        if n == 0 {
            return Err(RawError::Io);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(RawError::TooLarge);
        }
    }
}

type Parsed = (HashMap<String, String>, HeaderMap);

fn parse_head(head: &[u8]) -> Result<Parsed, Error> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Error::new(ErrorCode::BadRequest, "malformed HTTP request")),
    }
    let path = req.path.unwrap_or("/");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path != "/sse" {
        return Err(Error::not_found());
    }
    let query: HashMap<String, String> = serde_urlencoded::from_str(query)
        .map_err(|e| Error::new(ErrorCode::InvalidQuery, e.to_string()))?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    Ok((query, headers))
}

pub(super) fn push_cors(out: &mut Vec<u8>, cors: Option<&str>) {
    if let Some(origin) = cors {
        out.extend_from_slice(b"access-control-allow-origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\nvary: origin\r\n");
    }
}

/// A refusal on the raw path: always `Connection: close` (nothing else is
/// read from this socket).
pub(super) async fn write_error(tcp: &mut TcpStream, e: Error, cors: Option<&str>) {
    let body = e.http_body();
    let status = e.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    if let Some(secs) = e.retry_after {
        out.extend_from_slice(format!("retry-after: {secs}\r\n").as_bytes());
    }
    push_cors(&mut out, cors);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&out)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.shutdown()).await;
}
