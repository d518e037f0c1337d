//! The Server-Sent Events transport (SPEC §6).
//!
//! The response body is a stream that owns the connection's session and
//! queue: hyper polls it when the socket can take more, so a client that
//! stops reading stops being polled, its queue fills, and the hub marks it
//! slow; the kernel's `TCP_USER_TIMEOUT` (set on every accepted socket)
//! then ends a connection whose peer acknowledges nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use futures_util::{Future, FutureExt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{cursor, parse_channels, WRITE_BATCH};
use crate::auth::bearer;
use crate::error::ApiError;
use crate::hub::{ConnShared, Inbound, Receiver, Session, SubscribeError};
use crate::message::{Channel, Message, MessageId};
use crate::metrics::Transport;
use crate::server::{App, ConnPermit, HEADER_READ_TIMEOUT};

/// The `retry:` sent first: how long a browser waits before reconnecting.
pub const RETRY_MS: u64 = 2000;

/// `GET /sse?channels=a,b&token=…&lastEventId=…` through hyper. Most
/// requests take [`serve_raw`] instead (see there); this path serves the rest.
pub async fn handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (sse, first) = open(&app, peer.ip(), &query, &headers).await?;
    let body = stream::unfold(
        (sse, Some(Bytes::from(first)), None::<Timers>),
        |(mut sse, first, timers)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<_, std::convert::Infallible>(first),
                    (sse, None, timers),
                ));
            }
            let mut timers = timers.unwrap_or_else(|| Timers::new(&sse.app));
            let chunk = sse.next_chunk(&mut timers).await?;
            Some((Ok(chunk), (sse, None, Some(timers))))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Validates, authorizes and admits a stream, subscribes its channels and
/// encodes what comes first (`retry:`, resets, backlog, initial cursor).
async fn open(
    app: &Arc<App>,
    peer: IpAddr,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Sse, Vec<u8>), ApiError> {
    if app.is_draining() {
        return Err(ApiError::draining());
    }
    let channels = parse_channels(
        query.get("channels").map(String::as_str),
        app.config.max_channels_per_connection,
    )?;
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_channel",
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
            .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let principal = app
        .auth
        .subscriber(bearer(query.get("token").map(String::as_str), headers))?;
    if let Some(ch) = channels.iter().find(|c| !principal.may_subscribe(c)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token does not grant channel {ch:?}"),
        ));
    }
    let permit = app.admit(Transport::Sse, peer)?;
    let expires = principal.expires_in().map(|d| Instant::now() + d);

    let (shared, rx) = ConnShared::new(app.config.outbound_queue, principal.user.clone());
    let mut session = Session::new(
        app.hub.clone(),
        shared.clone(),
        app.config.max_channels_per_connection,
    );
    let mut first = format!("retry: {RETRY_MS}\n\n").into_bytes();
    let mut positions = Vec::with_capacity(channels.len());
    let mut backlog = Vec::new();
    for (channel, since) in channels.iter().zip(since) {
        let sub = session
            .subscribe(channel.clone(), since)
            .await
            .map_err(|e| match e {
                SubscribeError::Broker(b) => ApiError::from(b),
                other => ApiError::bad_request("invalid_channel", other.to_string()),
            })?;
        if since.is_some() && !sub.recovered {
            first.extend_from_slice(
                format!("event: reset\ndata: {{\"channel\":\"{channel}\"}}\n\n").as_bytes(),
            );
        }
        // The cursor starts from where the client was, and moves as the
        // backlog is written below.
        positions.push(match since {
            Some(since) if sub.recovered => since,
            _ => sub.position,
        });
        backlog.extend(sub.messages);
    }
    let mut sse = Sse {
        expires,
        app: app.clone(),
        channels,
        positions,
        session,
        rx,
        shared,
        permit,
        done: false,
        flush_at: None,
    };
    let delivered = sse.encode(&backlog, &mut first);
    if delivered == 0 {
        // An event with only an id sets the browser's lastEventId without
        // dispatching anything: a reconnect before the first message still
        // resumes from here.
        first.extend_from_slice(b"id: ");
        cursor::write(&sse.positions, &mut first);
        first.extend_from_slice(b"\n\n");
    }
    sse.count(&backlog);
    Ok((sse, first))
}

/// Whether a fresh connection starts with `GET /sse` (peeked, not read).
/// Waits at most [`HEADER_READ_TIMEOUT`] for the first bytes.
pub async fn sniff(tcp: &TcpStream) -> bool {
    const PREFIX: &[u8] = b"GET /sse";
    let mut buf = [0u8; 9];
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        let m = n.min(PREFIX.len());
        if buf[..m] != PREFIX[..m] {
            return false;
        }
        if n == buf.len() {
            return matches!(buf[8], b'?' | b' ');
        }
        // A request line arriving in pieces: peek again shortly.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves an SSE request on the raw socket, without hyper.
///
/// Why: a stream lives for hours and hyper keeps two 8 KiB buffers (read and
/// header write) per connection for its whole life, which is most of an idle
/// SSE connection's memory. Here the request head is read into a buffer that
/// is dropped before streaming, the response is written with
/// `Connection: close` (no chunked framing: one write per batch of events),
/// and the client's closing is noticed by a read readiness wait.
pub async fn serve_raw(app: Arc<App>, mut tcp: TcpStream, peer: SocketAddr) {
    let head = match tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Ok(head)) => head,
        Ok(Err(RawError::TooLarge)) => {
            let e = ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "request head above 16 KiB",
            );
            return write_error(&mut tcp, e, None).await;
        }
        _ => return,
    };
    let (query, headers) = match parse_head(&head) {
        Ok(parsed) => parsed,
        Err(e) => return write_error(&mut tcp, e, None).await,
    };
    drop(head);
    let cors = cors_origin(&app.config.allowed_origins, &headers);
    let (mut sse, first) = match open(&app, peer.ip(), &query, &headers).await {
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
    let write_timeout = app.config.idle_timeout;
    if !write_within(&mut tcp, &out, write_timeout, &sse.shared).await {
        return;
    }
    drop(out);
    let mut timers = Timers::new(&app);
    loop {
        let (read, mut write) = tcp.split();
        let chunk = tokio::select! {
            chunk = sse.next_chunk(&mut timers) => chunk,
            () = peer_closed(&read) => None,
        };
        let Some(chunk) = chunk else { break };
        if sse.done {
            // The final control event (reconnect): best effort, briefly, even
            // when the reason is a kick.
            let _ = tokio::time::timeout(Duration::from_secs(1), write.write_all(&chunk)).await;
            break;
        }
        if !write_within(&mut write, &chunk, write_timeout, &sse.shared).await {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.shutdown()).await;
}

/// Writes `bytes` within `limit`, unless the connection is kicked meanwhile
/// (a write stuck behind a full socket must not outlive a kick).
async fn write_within<W: AsyncWrite + Unpin>(
    tcp: &mut W,
    bytes: &[u8],
    limit: Duration,
    shared: &ConnShared,
) -> bool {
    let write = tcp.write_all(bytes);
    tokio::pin!(write);
    // Usually the socket takes it at once: then no timer is armed and no
    // kick waiter registered.
    if let Some(r) = write.as_mut().now_or_never() {
        return r.is_ok();
    }
    tokio::select! {
        biased;
        r = tokio::time::timeout(limit, write) => matches!(r, Ok(Ok(()))),
        _ = shared.kicked() => false,
    }
}

/// Resolves when the client closed its side (or the socket failed). Anything
/// it sends on an event stream is read and ignored.
async fn peer_closed(read: &tokio::net::tcp::ReadHalf<'_>) {
    let mut sink = [0u8; 64];
    loop {
        if read.readable().await.is_err() {
            return;
        }
        match read.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
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

fn parse_head(head: &[u8]) -> Result<Parsed, ApiError> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                "malformed HTTP request",
            ))
        }
    }
    let path = req.path.unwrap_or("/");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path != "/sse" {
        return Err(ApiError::not_found());
    }
    let query: HashMap<String, String> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
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

/// The `Access-Control-Allow-Origin` value for this request, as the CORS
/// layer of the hyper path would send it.
fn cors_origin(allowed: &[String], headers: &HeaderMap) -> Option<String> {
    if allowed.iter().any(|o| o == "*") {
        return Some("*".into());
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    allowed
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then(|| origin.to_string())
}

fn push_cors(out: &mut Vec<u8>, cors: Option<&str>) {
    if let Some(origin) = cors {
        out.extend_from_slice(b"access-control-allow-origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\nvary: origin\r\n");
    }
}

async fn write_error(tcp: &mut TcpStream, e: ApiError, cors: Option<&str>) {
    let body = serde_json::json!({"error": {"code": e.code, "message": e.message}}).to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        e.status.as_u16(),
        e.status.canonical_reason().unwrap_or(""),
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

/// The stream's state: one per SSE connection.
struct Sse {
    app: Arc<App>,
    /// The stream's channels, in `channels=` order (the cursor's order).
    channels: Vec<Channel>,
    /// Position of each channel, as written into the cursor.
    positions: Vec<MessageId>,
    session: Session,
    rx: Receiver,
    shared: Arc<ConnShared>,
    /// Held for the life of the stream: counts the connection.
    #[allow(dead_code)]
    permit: ConnPermit,
    /// When the token expires: the stream then ends with `token_expired`.
    expires: Option<Instant>,
    /// A final control event was written: end the stream.
    done: bool,
    /// With a write delay: when the queued messages are written.
    flush_at: Option<Instant>,
}

/// Timers and signals the stream waits on, created on first poll.
struct Timers {
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    lifetime: Option<Instant>,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Timers {
    fn new(app: &App) -> Timers {
        Timers {
            heartbeat: Box::pin(tokio::time::sleep(app.config.sse_heartbeat)),
            lifetime: app.lifetime_deadline(),
            drain: Box::pin(app.drain_notice()),
        }
    }
}

impl Sse {
    /// Appends `id: <cursor>` + the shared event of every message.
    fn encode(&mut self, batch: &[Arc<Message>], out: &mut Vec<u8>) -> usize {
        for m in batch {
            if let Some(i) = self.channels.iter().position(|c| *c == m.channel) {
                self.positions[i] = m.id;
            }
            out.extend_from_slice(b"id: ");
            cursor::write(&self.positions, out);
            out.push(b'\n');
            out.extend_from_slice(m.sse_event());
        }
        batch.len()
    }

    fn count(&self, batch: &[Arc<Message>]) {
        let metrics = &self.app.metrics;
        metrics.sse.delivered.inc_by(batch.len() as u64);
        let now = Instant::now();
        for m in batch {
            metrics
                .delivery_latency
                .observe(now.duration_since(m.accepted).as_secs_f64());
        }
    }

    fn control(&mut self, reason: &str) -> Bytes {
        self.done = true;
        let retry = self.app.retry_ms();
        Bytes::from(format!(
            "retry: {retry}\nevent: reconnect\ndata: {{\"reason\":\"{reason}\",\"retry_ms\":{retry}}}\n\n"
        ))
    }

    /// The queued messages (at most [`WRITE_BATCH`]) as one chunk of events.
    fn take_batch(&mut self) -> Option<Bytes> {
        let mut batch = Vec::with_capacity(8);
        while batch.len() < WRITE_BATCH {
            match self.rx.try_recv() {
                Some(m) if self.session.accept(&m) => batch.push(m),
                Some(_) => {}
                None => break,
            }
        }
        let first = batch.first()?;
        let mut out = Vec::with_capacity(batch.len() * (first.sse_event().len() + 40));
        self.encode(&batch, &mut out);
        // Counted when handed to the writer, which writes it next.
        self.count(&batch);
        Some(Bytes::from(out))
    }

    /// The next bytes to write, or `None` to end the stream.
    async fn next_chunk(&mut self, timers: &mut Timers) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let sse_heartbeat = self.app.config.sse_heartbeat;
        loop {
            let lifetime = timers.lifetime;
            let expires = self.expires;
            let flush_at = self.flush_at;
            tokio::select! {
                biased;
                inbound = self.rx.recv(flush_at.is_some()) => {
                    if let Inbound::Kicked(kick) = inbound {
                        return Some(self.control(kick.reason()));
                    }
                    if let (Some(delay), None) = (self.app.config.write_delay.0, flush_at) {
                        self.flush_at = Some(Instant::now() + delay);
                        continue;
                    }
                    self.flush_at = None;
                    if let Some(chunk) = self.take_batch() {
                        return Some(chunk);
                    }
                }
                () = sleep_until_opt(flush_at) => {
                    self.flush_at = None;
                    if let Some(chunk) = self.take_batch() {
                        return Some(chunk);
                    }
                }
                () = &mut timers.drain => return Some(self.control("draining")),
                () = sleep_until_opt(lifetime) => return Some(self.control("max_lifetime")),
                () = sleep_until_opt(expires) => return Some(self.control("token_expired")),
                () = &mut timers.heartbeat => {
                    timers.heartbeat.as_mut().reset((Instant::now() + sse_heartbeat).into());
                    return Some(Bytes::from_static(b": ping\n\n"));
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
