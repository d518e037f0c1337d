//! What happens to a request body the handler did not read to the end.
//!
//! A handler may answer before reading the body: a 401 or a 400 decided from
//! the headers or the path, a 413 that stops at the limit. hyper then reads
//! once more and, if the body is still not done, closes the connection —
//! after an answer that promised keep-alive, so a pooled client's next request
//! on that connection fails. Here every request body is tracked; when the
//! answer is ready and the body is not finished, the rest is read and thrown
//! away (at most [`DRAIN_LIMIT`] bytes, within [`DRAIN_TIMEOUT`]) and the
//! connection is kept; otherwise the answer carries `Connection: close`, which
//! hyper honours by closing after writing it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Most bytes of an unread body thrown away to keep the connection. Above
/// every publish limit by default (64 KiB, batches 1 MiB), as a client that
/// is refused usually sent a body of the size the route accepts.
pub const DRAIN_LIMIT: u64 = 1 << 20;
/// Longest wait for the rest of an unread body: a client that trickles it is
/// not worth a connection.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The request body as handlers see it; the other end stays with the
/// connection, which finishes or abandons the body after the answer.
pub struct Tracked(Arc<Mutex<Option<Incoming>>>);

/// The connection's end of a [`Tracked`] body.
pub struct Unread {
    body: Arc<Mutex<Option<Incoming>>>,
    /// `Expect: 100-continue`: a client that waits for our go-ahead before
    /// sending the body. Draining it would ask for a body nobody wants.
    expects_continue: bool,
}

fn lock(body: &Mutex<Option<Incoming>>) -> MutexGuard<'_, Option<Incoming>> {
    // Poisoned only by a panic inside `poll_frame`; the body is then useless
    // anyway and the connection closes.
    body.lock().unwrap_or_else(|e| e.into_inner())
}

/// The body for the handlers and, when there is a body at all, the
/// connection's end of it. (Bodiless requests — GET, WebSocket upgrades — pass
/// through untouched: no allocation.)
pub fn track(body: Incoming, headers: &HeaderMap) -> (axum::body::Body, Option<Unread>) {
    if body.is_end_stream() {
        return (axum::body::Body::new(body), None);
    }
    let shared = Arc::new(Mutex::new(Some(body)));
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let unread = Unread {
        body: shared.clone(),
        expects_continue,
    };
    (axum::body::Body::new(Tracked(shared)), Some(unread))
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Locked for one poll, never across an await.
        let mut slot = lock(&self.0);
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Finished: nothing left for the connection to do.
            *slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0).as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.0)
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Unread {
    /// Called with the answer: drains what the handler left unread, or marks
    /// the answer `Connection: close`.
    pub async fn settle<B>(self, mut resp: Response<B>) -> Response<B> {
        let Some(mut body) = lock(&self.body).take() else {
            return resp;
        };
        if body.is_end_stream() {
            return resp;
        }
        let small = body
            .size_hint()
            .upper()
            .is_none_or(|len| len <= DRAIN_LIMIT);
        let drained = !self.expects_continue
            && small
            && tokio::time::timeout(DRAIN_TIMEOUT, drain(&mut body))
                .await
                .unwrap_or(false);
        if !drained {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Reads `body` to its end, at most [`DRAIN_LIMIT`] bytes; whether it ended.
async fn drain(body: &mut Incoming) -> bool {
    let mut read = 0u64;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return true,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                    if read > DRAIN_LIMIT {
                        return false;
                    }
                }
            }
            Some(Err(_)) => return false,
        }
    }
}
