//! WebSocket framing (docs/protocol.md, "WebSocket"): text frames in and
//! out, Ping as the heartbeat, close codes. The connection's life is
//! [`super::core`]'s.
//!
//! tungstenite frames and parses; under it is either hyper's upgraded
//! connection or, for a handshake served on the raw socket
//! (`http::ws::serve_raw`), a [`RawIo`] that shares the socket with the
//! connection's [`WsLane`]: the fan-out then writes a delivery's frame itself
//! while the task waits (`node::hub`, the lane; docs/architecture.md).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::core::{Gone, Received, Transport};
use crate::config::Config;
use crate::metrics;
use crate::node::{ConnShared, Lane, Wrote};
use crate::protocol::{Disconnect, Message};

/// Initial tungstenite read buffer, and the most it reads at a time: small,
/// because clients send little (subscribe, ack, ping) and it is allocated
/// per connection (tungstenite's default is 128 KiB). A larger frame grows
/// it to the frame's size and is read 256 bytes a time; 512 here was an
/// eighth of an idle WebSocket connection's memory (docs/benchmarks.md).
pub(crate) const READ_BUFFER: usize = 256;
/// Bytes buffered before tungstenite writes; we flush after each batch anyway.
pub(crate) const WRITE_BUFFER: usize = 16 * 1024;

/// tungstenite's settings for a server connection of this node.
pub(crate) fn ws_config(config: &Config) -> WebSocketConfig {
    let max = config.max_message_bytes + 1024;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// What a WebSocket runs on: hyper's upgraded connection, or [`RawIo`].
pub(crate) trait WsIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Takes what the lane left of a frame, to be written before anything
    /// else. Only a socket with a lane is given one.
    fn hold_rest(&mut self, rest: Arc<Message>, skip: usize) {
        let _ = (rest, skip);
    }
}

impl WsIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// An upgraded WebSocket.
pub(crate) struct Ws<S>(pub(crate) WebSocketStream<S>);

/// The last words are short: a slow consumer may not read them at all.
const GOODBYE: Duration = Duration::from_secs(1);

impl<S: WsIo> Transport for Ws<S> {
    const KIND: metrics::Transport = metrics::Transport::Ws;

    fn heartbeat_period(config: &Config) -> Duration {
        config.heartbeat
    }

    fn idle_limit(config: &Config) -> Option<Duration> {
        Some(config.idle_timeout)
    }

    async fn write_messages(&mut self, batch: &[Arc<Message>]) -> Result<(), Gone> {
        // Every subscriber's frame is the same shared bytes; one flush.
        for m in batch {
            self.0
                .feed(WsMessage::Text(m.ws_frame().clone()))
                .await
                .map_err(|_| Gone)?;
        }
        self.0.flush().await.map_err(|_| Gone)
    }

    async fn write_rest(&mut self, msg: &Arc<Message>, skip: usize) -> Result<(), Gone> {
        // The socket writes it first, then whatever tungstenite holds.
        self.0.get_mut().hold_rest(msg.clone(), skip);
        self.0.flush().await.map_err(|_| Gone)
    }

    async fn write_frame(&mut self, text: String) -> Result<(), Gone> {
        self.0
            .send(WsMessage::Text(text.into()))
            .await
            .map_err(|_| Gone)
    }

    async fn heartbeat(&mut self) -> Result<(), Gone> {
        self.0
            .send(WsMessage::Ping(Default::default()))
            .await
            .map_err(|_| Gone)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        // tokio-tungstenite keeps the read waker until the socket is readable.
        self.0.poll_next_unpin(cx).map(|next| match next {
            Some(Ok(WsMessage::Text(text))) => Received::Text(text),
            Some(Ok(WsMessage::Binary(_))) => Received::Binary,
            // tungstenite answers Pings itself; both count as activity.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Received::Activity,
            Some(Ok(WsMessage::Frame(_))) => Received::Activity,
            Some(Ok(WsMessage::Close(_)) | Err(_)) | None => Received::Gone,
        })
    }

    async fn close(&mut self, why: Disconnect, retry_ms: u64) {
        if let Some(frame) = why.ws_frame(retry_ms) {
            let _ = tokio::time::timeout(GOODBYE, self.0.send(WsMessage::Text(frame.into()))).await;
        }
        let (code, reason) = why.close();
        let frame = WsMessage::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(GOODBYE, self.0.send(frame)).await;
    }
}

/// The head of a server's text frame of `len` payload bytes (unmasked,
/// final): its bytes and its length.
fn frame_head(len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x81;
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

/// Writes what the socket takes now of `msg`'s frame after its first
/// `skip` bytes: how many more it took.
fn try_write_frame(tcp: &TcpStream, msg: &Message, skip: usize) -> std::io::Result<usize> {
    let payload = msg.ws_frame().as_bytes();
    let (head, n) = frame_head(payload.len());
    let (head, payload) = match skip.checked_sub(n) {
        None => (&head[skip..n], payload),
        Some(into) => (&[][..], &payload[into..]),
    };
    super::try_send(tcp, [head, payload])
}

/// The length of `msg`'s whole frame.
fn frame_len(msg: &Message) -> usize {
    let len = msg.ws_frame().len();
    frame_head(len).1 + len
}

/// The socket under tungstenite when the fan-out may write frames beside it.
/// Every write of tungstenite's first takes the lane back (so no lane write
/// goes between its bytes) and writes what the lane left of a frame; while
/// tungstenite holds bytes the socket did not take (a Pong it answered
/// inside a read, say), the lane stays closed ([`WsLane::blocked`]).
pub(crate) struct RawIo {
    sock: Arc<Sock>,
    shared: Arc<ConnShared>,
    /// A frame the lane wrote in part, and how much of it.
    rest: Option<(Arc<Message>, usize)>,
}

/// The socket, shared by tungstenite's [`RawIo`] and the fan-out's
/// [`WsLane`] (one allocation: idle connections are counted in bytes).
struct Sock {
    tcp: TcpStream,
    /// tungstenite's last write left bytes behind.
    dirty: AtomicBool,
}

/// The fan-out's side of a [`RawIo`] socket.
pub(crate) struct WsLane(Arc<Sock>);

impl RawIo {
    /// The socket under tungstenite, and its lane.
    pub(crate) fn new(tcp: TcpStream, shared: Arc<ConnShared>) -> (RawIo, WsLane) {
        let sock = Arc::new(Sock {
            tcp,
            dirty: AtomicBool::new(false),
        });
        let lane = WsLane(sock.clone());
        let io = RawIo {
            sock,
            shared,
            rest: None,
        };
        (io, lane)
    }

    /// Takes the lane back and writes what it left of a frame, if anything.
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(rest) = self.shared.claim_lane() {
            self.rest = Some(rest);
        }
        while let Some((msg, done)) = &mut self.rest {
            match try_write_frame(&self.sock.tcp, msg, *done) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    *done += n;
                    if *done == frame_len(msg) {
                        self.rest = None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Part of a frame is out: the lane stays closed until
                    // the rest is.
                    self.sock.dirty.store(true, Ordering::Release);
                    ready!(self.sock.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl WsIo for RawIo {
    fn hold_rest(&mut self, rest: Arc<Message>, skip: usize) {
        self.rest = Some((rest, skip));
    }
}

impl AsyncRead for RawIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let tcp = &self.sock.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for RawIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_rest(cx))?;
        loop {
            match me.sock.tcp.try_write(buf) {
                Ok(n) => {
                    me.sock.dirty.store(n < buf.len(), Ordering::Release);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    me.sock.dirty.store(true, Ordering::Release);
                    ready!(me.sock.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_rest(cx))?;
        // tungstenite flushes the socket once its own buffer is written.
        me.sock.dirty.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_rest(cx))?;
        Poll::Ready(socket2::SockRef::from(&me.sock.tcp).shutdown(std::net::Shutdown::Write))
    }
}

impl Lane for WsLane {
    fn kind(&self) -> metrics::Transport {
        metrics::Transport::Ws
    }

    fn try_write(&self, msg: &Message) -> std::io::Result<Wrote> {
        let n = try_write_frame(&self.0.tcp, msg, 0)?;
        Ok(if n == frame_len(msg) {
            Wrote::All
        } else {
            Wrote::Part(n)
        })
    }

    fn blocked(&self) -> bool {
        self.0.dirty.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    fn message(len: usize) -> Message {
        let data = format!("\"{}\"", "y".repeat(len));
        let at = std::time::Instant::now();
        Message::new(
            "c".into(),
            crate::protocol::MessageId::new(7, 1),
            data.as_bytes(),
            at,
        )
    }

    /// What tungstenite writes for the same frame.
    fn tungstenite_frame(msg: &Message) -> Vec<u8> {
        let payload = msg.ws_frame().as_bytes().to_vec();
        let mut out = Vec::new();
        Frame::message(payload, OpCode::Data(Data::Text), true)
            .format(&mut out)
            .unwrap();
        out
    }

    /// A connected pair: the server's end under a [`RawIo`], the client's.
    async fn pair() -> (RawIo, WsLane, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (shared, _rx) = ConnShared::new(8, None);
        let (io, lane) = RawIo::new(server, shared);
        (io, lane, client)
    }

    async fn read_exactly(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut got))
            .await
            .expect("in time")
            .unwrap();
        got
    }

    #[test]
    fn frame_heads_of_every_length_class() {
        assert_eq!(frame_head(5).0[..2], [0x81, 5]);
        assert_eq!(frame_head(125).1, 2);
        let (h, n) = frame_head(126);
        assert_eq!((&h[..n], n), (&[0x81, 126, 0, 126][..], 4));
        let (h, n) = frame_head(70_000);
        assert_eq!(n, 10);
        assert_eq!(h[1], 127);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
    }

    #[tokio::test]
    async fn the_lane_writes_the_frame_tungstenite_would() {
        let (_io, lane, mut client) = pair().await;
        for len in [10, 200, 70_000] {
            let msg = message(len);
            let want = tungstenite_frame(&msg);
            assert_eq!(lane.try_write(&msg).unwrap(), Wrote::All);
            assert_eq!(read_exactly(&mut client, want.len()).await, want, "{len}");
        }
    }

    #[tokio::test]
    async fn tungstenite_writes_go_after_the_lanes_rest_and_close_the_lane_while_cut() {
        let (mut io, lane, mut client) = pair().await;
        // What the lane left of a frame: written before tungstenite's bytes.
        let msg = Arc::new(message(300));
        let frame = tungstenite_frame(&msg);
        io.hold_rest(msg.clone(), 3);
        io.write_all(b"after").await.unwrap();
        let got = read_exactly(&mut client, frame.len() - 3 + 5).await;
        assert_eq!(got[..frame.len() - 3], frame[3..]);
        assert_eq!(&got[frame.len() - 3..], b"after");
        assert!(!lane.blocked());

        // Fill the socket with tungstenite's bytes: once one of its writes
        // is cut, the lane stays closed until one goes out whole.
        let big = vec![b'z'; 64 * 1024];
        let cut = loop {
            let wrote = futures_util::FutureExt::now_or_never(io.write(&big));
            match wrote {
                Some(Ok(n)) if n == big.len() => continue,
                _ => break wrote,
            }
        };
        assert!(lane.blocked(), "cut after {cut:?}");
        // The client reads everything; the next write goes out whole.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 20];
            while client.read(&mut sink).await.unwrap_or(0) > 0 {}
        });
        let n = io.write(b"whole").await.unwrap();
        assert_eq!(n, 5);
        assert!(!lane.blocked());
        // A lane's rest that the socket cannot take now keeps it closed too.
        let big = Arc::new(message(8 << 20));
        io.hold_rest(big, 1);
        let flushed = futures_util::FutureExt::now_or_never(io.flush());
        assert!(
            flushed.is_none() && lane.blocked(),
            "8 MiB do not fit at once"
        );
        io.flush().await.unwrap();
        assert!(!lane.blocked(), "flushed: open again");
        drop(io);
        drop(lane);
        drain.await.unwrap();
    }
}
