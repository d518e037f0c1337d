//! Server-Sent Events framing (docs/protocol.md, "Server-Sent Events"):
//! `id: <cursor>` before each shared message event, `: ping` as the
//! heartbeat, `event: reconnect` as the last words. The bytes go to an
//! [`EventSink`] (the raw socket, or hyper's body); the connection's life is
//! [`super::core`]'s.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::core::{Core, Gone, Received, Transport};
use crate::config::Config;
use crate::metrics;
use crate::protocol::{cursor, Channel, Disconnect, Error, Message, MessageId};

/// The `retry:` sent first: how long a browser waits before reconnecting.
pub(crate) const RETRY_MS: u64 = 2000;

/// Where the events of one stream go.
pub(crate) trait EventSink: Send {
    /// Writes one chunk of events.
    fn write(&mut self, bytes: Vec<u8>) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Ready once the client went away; anything it sends is ignored.
    /// `Pending` leaves `cx`'s waker registered (see `Transport::poll_recv`).
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Ends the stream after the last event.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// One event stream.
pub(crate) struct Sse<S> {
    opened: Opened,
    sink: S,
}

/// Subscribes a stream's channels (resuming each from its cursor position)
/// and encodes what comes first: `retry:`, resets, the backlog, and the
/// initial cursor. Refusals become the HTTP answer.
pub(crate) async fn open(
    core: &mut Core,
    channels: Vec<Channel>,
    since: Vec<Option<MessageId>>,
) -> Result<(Opened, Vec<u8>), Error> {
    let mut first = format!("retry: {RETRY_MS}\n\n").into_bytes();
    let mut positions = Vec::with_capacity(channels.len());
    let mut backlog = Vec::new();
    for (channel, since) in channels.iter().zip(since) {
        let sub = core.subscribe(channel.clone(), since).await?;
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
    let mut opened = Opened {
        channels,
        positions,
    };
    opened.encode(&backlog, &mut first);
    if backlog.is_empty() {
        // An event with only an id sets the browser's lastEventId without
        // dispatching anything: a reconnect before the first message still
        // resumes from here.
        first.extend_from_slice(b"id: ");
        cursor::write(&opened.positions, &mut first);
        first.extend_from_slice(b"\n\n");
    }
    core.count_delivered(metrics::Transport::Sse, &backlog);
    Ok((opened, first))
}

/// A stream's cursor state, before it has a sink.
pub(crate) struct Opened {
    /// The stream's channels, in `channels=` order (the cursor's order).
    channels: Vec<Channel>,
    /// Position of each channel, as written into the cursor.
    positions: Vec<MessageId>,
}

impl Opened {
    /// Appends `id: <cursor>` + the shared event of every message.
    fn encode(&mut self, batch: &[Arc<Message>], out: &mut Vec<u8>) {
        for m in batch {
            if let Some(i) = self.channels.iter().position(|c| *c == m.channel) {
                self.positions[i] = m.id;
            }
            out.extend_from_slice(b"id: ");
            cursor::write(&self.positions, out);
            out.push(b'\n');
            out.extend_from_slice(m.sse_event());
        }
    }

    pub(crate) fn with<S: EventSink>(self, sink: S) -> Sse<S> {
        Sse { opened: self, sink }
    }
}

impl<S: EventSink> Transport for Sse<S> {
    const KIND: metrics::Transport = metrics::Transport::Sse;

    fn heartbeat_period(config: &Config) -> Duration {
        config.sse_heartbeat
    }

    /// A stream's client sends nothing: a dead peer is found by the write
    /// timeouts and `TCP_USER_TIMEOUT`.
    fn idle_limit(_: &Config) -> Option<Duration> {
        None
    }

    async fn write_messages(&mut self, batch: &[Arc<Message>]) -> Result<(), Gone> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(batch.len() * (first.sse_event().len() + 40));
        self.opened.encode(batch, &mut out);
        self.sink.write(out).await
    }

    /// Streams have no control frames besides the last.
    async fn write_frame(&mut self, _: String) -> Result<(), Gone> {
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), Gone> {
        self.sink.write(b": ping\n\n".to_vec()).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        self.sink.poll_closed(cx).map(|()| Received::Gone)
    }

    async fn close(&mut self, why: Disconnect, retry_ms: u64) {
        if let Some(event) = why.sse_event(retry_ms) {
            // Best effort, briefly, even when the reason is a kick.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.write(event)).await;
        }
        self.sink.finish().await;
    }
}
