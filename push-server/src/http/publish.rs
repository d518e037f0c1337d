//! `POST /api/v1/channels/{channel}/messages` on the raw socket: the hot
//! endpoint of a backend's keep-alive connection, without hyper, axum's
//! router or the CORS layer (docs/protocol.md, "HTTP API"; the decision in
//! docs/benchmarks.md, "What changed each figure").
//!
//! Why: on the personal-channel row 83 % of push-server's user instructions
//! per delivery were the HTTP publish path (hyper's parse and encode,
//! routing, the CORS layer's headers, a `HeaderMap` per request), and each
//! request's answer was a write of its own although backends pipeline:
//! two system calls per delivery. hyper's `pipeline_flush` would batch the
//! answers but without a bound on what it buffers. Here requests are parsed
//! with `httparse` (hyper's parser) straight from the read buffer, and the
//! answers of pipelined requests go out in one write, bounded.
//!
//! Only the plain form is served here: HTTP/1.1, a `Content-Length` within
//! `max_message_bytes`, a channel segment without percent-encoding, no
//! `Transfer-Encoding`, `Expect`, `Upgrade` or (unless every origin is
//! allowed) `Origin`. The first request that is anything else — another
//! route, a malformed head, a chunked body — hands the connection, with what
//! was read of it, to hyper for the rest of its life, after the answers
//! before it were written: the answers are those of the router, in order.
//!
//! Bounds: the read buffer holds one request head (at most [`MAX_HEAD`]) and
//! body (at most `max_message_bytes`); answers are written once no complete
//! request is buffered, when a publish must wait (a broker round trip), or
//! at [`FLUSH_AT`] bytes, so a client that pipelines without reading stops
//! being read instead of growing the server's memory. A request must arrive
//! whole within [`HEADER_READ_TIMEOUT`] of its first byte, and an idle
//! connection is closed after as long.
//!
//! A publish that waits for the broker (a Redis round trip) is published
//! together with the plain requests read behind it (at most [`MAX_BATCH`],
//! none twice to one channel), so a deep pipeline costs one round trip per
//! batch instead of one per request; their answers follow in request order.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use bytes::{Buf, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{is_json_type, published_json_len, put_published_json};
use super::{AppState, HEADER_READ_TIMEOUT};
use crate::auth::bearer_of;
use crate::protocol::message::validate_channel;
use crate::protocol::{Data, Error, MessageId};

/// The path's fixed parts.
const PREFIX: &str = "/api/v1/channels/";
const SUFFIX: &str = "/messages";

/// Largest request head served here; a larger one goes to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed per request; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Answers buffered before they are written although more requests wait.
const FLUSH_AT: usize = 16 * 1024;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Publishes in flight per connection, when they wait for the broker.
const MAX_BATCH: usize = 128;

/// A request served here, as ranges of the read buffer.
struct Plain {
    /// Head and body.
    len: usize,
    body: Range<usize>,
    channel: Range<usize>,
    bearer: Option<Range<usize>>,
    json: bool,
    /// `Connection: close`: answer, then close.
    close: bool,
}

enum Next {
    /// The buffer does not hold a whole request yet.
    Partial,
    Plain(Plain),
    /// Anything else: hyper's.
    Other,
}

/// Whether the buffer's first request is one this path serves.
fn next(buf: &[u8], any_origin: bool, max_body: usize) -> Next {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Next::Partial,
        // Malformed, too many headers or too long: hyper answers it.
        _ => return Next::Other,
    };
    if head_len > MAX_HEAD || req.method != Some("POST") || req.version != Some(1) {
        return Next::Other;
    }
    let Some(channel) = req
        .path
        .map(|p| p.split_once('?').map_or(p, |(path, _)| path))
        .and_then(|p| p.strip_prefix(PREFIX))
        .and_then(|p| p.strip_suffix(SUFFIX))
        .filter(|c| !c.is_empty() && !c.bytes().any(|b| b == b'/' || b == b'%'))
    else {
        return Next::Other;
    };
    let mut length = None;
    let mut bearer = None;
    let mut json = false;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // Digits only (no sign, no space), at most 9 of them: a
            // longer length is hyper's to judge.
            let v = h.value;
            let parsed = (!v.is_empty() && v.len() <= 9 && v.iter().all(u8::is_ascii_digit))
                .then(|| v.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')));
            match (length, parsed) {
                (None, Some(n)) if n <= max_body => length = Some(n),
                _ => return Next::Other,
            }
        } else if name.eq_ignore_ascii_case(b"authorization") {
            // The first one, as `HeaderMap::get` takes it.
            if bearer.is_none() {
                bearer = Some(
                    visible(h.value)
                        .and_then(bearer_of)
                        .map(|t| range_in(buf, t)),
                );
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if !json {
                json = is_json_type(visible(h.value));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            match h.value {
                v if v.eq_ignore_ascii_case(b"close") => close = true,
                v if v.eq_ignore_ascii_case(b"keep-alive") => {}
                _ => return Next::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || (!any_origin && name.eq_ignore_ascii_case(b"origin"))
        {
            return Next::Other;
        }
    }
    let Some(length) = length else {
        return Next::Other;
    };
    if buf.len() < head_len + length {
        return Next::Partial;
    }
    Next::Plain(Plain {
        len: head_len + length,
        body: head_len..head_len + length,
        channel: range_in(buf, channel),
        bearer: bearer.flatten(),
        json,
        close,
    })
}

impl Plain {
    /// The channel and the bearer token, as text.
    fn text<'b>(&self, buf: &'b [u8]) -> (&'b str, Option<&'b str>) {
        // The path's and the header's bytes were checked as text in `next`.
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or_default();
        (text(&self.channel), self.bearer.as_ref().map(text))
    }

    /// The same request found `by` bytes into the buffer.
    fn shifted(self, by: usize) -> Plain {
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        Plain {
            body: shift(self.body),
            channel: shift(self.channel),
            bearer: self.bearer.map(shift),
            ..self
        }
    }
}

/// The whole plain requests buffered behind `first`, to be published
/// concurrently with it: at most [`MAX_BATCH`], up to the first that is
/// not plain, asks to close, or names a channel already in the batch (so
/// that a channel's messages are published one after another, in order);
/// none once the server stops.
fn behind<'a>(
    buf: &[u8],
    first: &Plain,
    any_origin: bool,
    max_body: usize,
    stop: &CancellationToken,
    batch: &'a mut Vec<Plain>,
) -> &'a [Plain] {
    batch.clear();
    let mut at = first.len;
    while batch.len() < MAX_BATCH && !stop.is_cancelled() {
        let Next::Plain(p) = next(&buf[at..], any_origin, max_body) else {
            break;
        };
        let p = p.shifted(at);
        let channel = &buf[p.channel.clone()];
        if p.close
            || std::iter::once(first)
                .chain(batch.iter())
                .any(|q| buf[q.channel.clone()] == *channel)
        {
            break;
        }
        at += p.len;
        batch.push(p);
    }
    batch
}

/// A header value as `HeaderValue::to_str` would give it: visible ASCII.
fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| *b == b'\t' || (b' '..=b'~').contains(b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Where `part`, a slice of `buf`, lies in it.
fn range_in(buf: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Serves a fresh connection whose first bytes are `POST /api/v1/channels/`.
pub(super) async fn serve_raw(
    state: AppState,
    router: Router,
    mut tcp: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let node = state.node.clone();
    let max_body = node.config.max_message_bytes;
    let write_limit = node.config.idle_timeout;
    let any_origin = state.origins.any();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    // The requests published together with one that waits for the broker.
    let mut batch: Vec<Plain> = Vec::new();
    // When the first byte of the request being read arrived.
    let mut started: Option<Instant> = None;
    loop {
        let plain = match next(&buf, any_origin, max_body) {
            Next::Plain(p) => p,
            Next::Other => {
                if flush(&mut tcp, &mut out, write_limit).await.is_err() {
                    return;
                }
                let io = Rewind { pre: buf, io: tcp };
                return super::serve_http(router, io, peer, stop).await;
            }
            Next::Partial => {
                if flush(&mut tcp, &mut out, write_limit).await.is_err() {
                    return;
                }
                buf.reserve(READ_CHUNK);
                let read = if buf.is_empty() {
                    // Idle between requests: the shutdown may close it.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        r = tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.read_buf(&mut buf)) => r,
                    }
                } else {
                    let deadline = *started.get_or_insert_with(Instant::now) + HEADER_READ_TIMEOUT;
                    tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)).await
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {
                        started.get_or_insert_with(Instant::now);
                        continue;
                    }
                    // Closed, failed, or too slow (hyper closes silently too).
                    _ => return,
                }
            }
        };
        started = None;
        let close = plain.close || stop.is_cancelled();
        let mut consumed = plain.len;
        {
            let (channel, bearer) = plain.text(&buf);
            let body = &buf[plain.body.clone()];
            let mut first = pin!(publish(&state, channel, bearer, plain.json, body));
            match first.as_mut().now_or_never() {
                Some(answer) => encode(&mut out, answer, channel, any_origin, close),
                // Waits for the broker: what is answered goes out meanwhile,
                // and the requests read behind it are published with it.
                None => {
                    if flush(&mut tcp, &mut out, write_limit).await.is_err() {
                        return;
                    }
                    if close {
                        let answer = first.await;
                        encode(&mut out, answer, channel, any_origin, close);
                    } else {
                        let behind = behind(&buf, &plain, any_origin, max_body, &stop, &mut batch);
                        let rest: FuturesOrdered<_> = behind
                            .iter()
                            .map(|p| {
                                let (channel, bearer) = p.text(&buf);
                                publish(&state, channel, bearer, p.json, &buf[p.body.clone()])
                            })
                            .collect();
                        let (answer, rest) =
                            futures_util::future::join(first, rest.collect::<Vec<_>>()).await;
                        encode(&mut out, answer, channel, any_origin, false);
                        for (p, answer) in behind.iter().zip(rest) {
                            encode(&mut out, answer, p.text(&buf).0, any_origin, false);
                        }
                        consumed += behind.iter().map(|p| p.len).sum::<usize>();
                    }
                }
            }
        }
        buf.advance(consumed);
        if close {
            let _ = flush(&mut tcp, &mut out, write_limit).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), tcp.shutdown()).await;
            return;
        }
        if out.len() >= FLUSH_AT && flush(&mut tcp, &mut out, write_limit).await.is_err() {
            return;
        }
    }
}

/// The checks of `api::publish_one` in its order (channel, publisher, then
/// the node's), and the publish. A refusal is counted.
async fn publish(
    state: &AppState,
    channel: &str,
    bearer: Option<&str>,
    json: bool,
    body: &[u8],
) -> Result<MessageId, Error> {
    let node = &state.node;
    let published = async {
        validate_channel(channel)?;
        let publisher = node.publisher_bearer(bearer)?;
        let data = if json {
            Data::JsonBody(body)
        } else {
            Data::Text(body)
        };
        node.publish(&publisher, channel, data).await
    }
    .await;
    match published {
        Ok(id) => Ok(id),
        Err(e) => {
            node.metrics.publish_refused(e.code);
            Err(e)
        }
    }
}

/// The answer, with the headers the router's would have (`Date`, the CORS
/// layer's `Vary`, `Access-Control-Allow-Origin: *` when every origin is).
/// A success's body is written straight into `out` (no allocation per
/// publish); a refusal's is formatted first (the rare path).
fn encode(
    out: &mut Vec<u8>,
    answer: Result<MessageId, Error>,
    channel: &str,
    any_origin: bool,
    close: bool,
) {
    let mut n = itoa::Buffer::new();
    let (body, retry_after) = match answer {
        Ok(id) => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            (Ok(id), None)
        }
        Err(e) => {
            let status = e.status();
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(n.format(status.as_u16()).as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            (Err(e.http_body()), e.retry_after)
        }
    };
    out.extend_from_slice(
        b"content-type: application/json\r\n\
          vary: origin, access-control-request-method, access-control-request-headers\r\n",
    );
    if any_origin {
        out.extend_from_slice(b"access-control-allow-origin: *\r\n");
    }
    if let Some(secs) = retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(n.format(secs).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    let len = match &body {
        Ok(id) => published_json_len(channel, *id),
        Err(text) => text.len(),
    };
    out.extend_from_slice(n.format(len).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    let start = out.len();
    match body {
        Ok(id) => put_published_json(out, channel, id),
        Err(text) => out.extend_from_slice(text.as_bytes()),
    }
    debug_assert_eq!(out.len() - start, len);
}

/// `Date`, formatted once a second per thread (as hyper does).
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != secs {
            *date = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(date.1.as_bytes());
    });
}

/// Writes the buffered answers, within `limit` (a client that stops
/// reading is dropped, as the router's connections are by their socket's
/// user timeout).
async fn flush(tcp: &mut TcpStream, out: &mut Vec<u8>, limit: Duration) -> Result<(), ()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(limit, tcp.write_all(out)).await;
    out.clear();
    // An answer buffer grown by a burst is not kept for the connection's life.
    if out.capacity() > 4 * FLUSH_AT {
        out.shrink_to(FLUSH_AT);
    }
    match written {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The connection handed to hyper: what was read first, then the socket.
pub(super) struct Rewind {
    pub(super) pre: BytesMut,
    pub(super) io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pre.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, out);
        }
        let n = this.pre.len().min(out.remaining());
        out.put_slice(&this.pre[..n]);
        this.pre.advance(n);
        if this.pre.is_empty() {
            // Not kept for the connection's life.
            this.pre = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(req: &str) -> Option<Plain> {
        match next(req.as_bytes(), false, 100) {
            Next::Plain(p) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn the_plain_form_is_served_here() {
        let req = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: x\r\n\
                   Authorization: Bearer  k1 \r\nContent-Type: application/json; charset=utf-8\r\n\
                   content-length: 2\r\n\r\n42POST";
        let p = plain(req).expect("plain");
        assert_eq!(&req[p.channel], "news");
        assert_eq!(&req[p.bearer.expect("bearer")], "k1");
        assert_eq!(&req[p.body], "42");
        assert!(p.json);
        assert!(!p.close);
        assert_eq!(p.len, req.len() - 4);
        let req = "POST /api/v1/channels/a.b:c@d-e_f/messages?x=1 HTTP/1.1\r\n\
                   connection: close\r\ncontent-length: 0\r\n\r\n";
        let p = plain(req).expect("plain");
        assert_eq!(&req[p.channel], "a.b:c@d-e_f");
        assert!(p.close && !p.json && p.bearer.is_none());
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for req in [
            "GET /api/v1/channels/news/messages HTTP/1.1\r\n\r\n",
            "POST /api/v1/channels/news/messages HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/publish HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels//messages HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a%20b/messages HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a/b/messages HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a/messages/ HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\ncontent-length: 101\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\ncontent-length: +1\r\n\r\n1",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n1",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n1",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\norigin: https://x\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\nconnection: upgrade\r\ncontent-length: 0\r\n\r\n",
            "POST /api/v1/channels/a/messages HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(next(req.as_bytes(), false, 100), Next::Other),
                "{req:?}"
            );
        }
        // With every origin allowed, `Origin` changes nothing in the answer.
        let req = "POST /api/v1/channels/a/messages HTTP/1.1\r\norigin: https://x\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(next(req.as_bytes(), true, 100), Next::Plain(_)));
    }

    #[test]
    fn partial_requests_wait_for_the_rest() {
        let req = "POST /api/v1/channels/a/messages HTTP/1.1\r\ncontent-length: 5\r\n\r\n12345";
        for cut in 1..req.len() {
            assert!(
                matches!(next(&req.as_bytes()[..cut], false, 100), Next::Partial),
                "cut at {cut}"
            );
        }
        let huge = format!(
            "POST /api/v1/channels/a/messages HTTP/1.1\r\nx: {}",
            "a".repeat(MAX_HEAD)
        );
        assert!(matches!(next(huge.as_bytes(), false, 100), Next::Other));
    }
}
