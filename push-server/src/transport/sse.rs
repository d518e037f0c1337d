//! Server-Sent Events framing (docs/protocol.md, "Server-Sent Events"):
//! `id: <cursor>` before each shared message event, `: ping` as the
//! heartbeat, `event: reconnect` as the last words. The bytes go to an
//! [`EventSink`] (the raw socket, or hyper's body); the connection's life is
//! [`super::core`]'s.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;

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
    /// Writes the events of `buf`, scattered over shared buffers (vectored
    /// where the sink can).
    fn write_buf<B: Buf + Send>(
        &mut self,
        buf: &mut B,
    ) -> impl Future<Output = Result<(), Gone>> + Send;
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
            for part in m.sse_event() {
                out.extend_from_slice(part);
            }
        }
    }

    /// How many channels the stream has.
    pub(crate) fn channels(&self) -> usize {
        self.channels.len()
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
        let Some(last) = batch.last() else {
            return Ok(());
        };
        if let [position] = &mut self.opened.positions[..] {
            // One channel: the cursor is the message's id, which its shared
            // event already carries. No copy, one vectored write.
            *position = last.id;
            return self.sink.write_buf(&mut Framed::new(batch)).await;
        }
        let mut out = Vec::with_capacity(batch.len() * (last.sse_framed_len() + 40));
        self.opened.encode(batch, &mut out);
        self.sink.write(out).await
    }

    /// Only a stream of one channel has a lane (`http::sse`): its event is
    /// the message's shared framed bytes.
    async fn write_rest(&mut self, msg: &Arc<Message>, skip: usize) -> Result<(), Gone> {
        if let [position] = &mut self.opened.positions[..] {
            *position = msg.id;
        }
        let mut framed = Framed::new(std::slice::from_ref(msg));
        framed.advance(skip);
        self.sink.write_buf(&mut framed).await
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

/// The shared framed events of a batch as one [`Buf`], for a vectored
/// write of every message in it: three slices per message (its inline head,
/// the frame's shared tail, `\n\n`); a writev takes at most 64 slices, and
/// what does not fit goes in the next.
struct Framed<'a> {
    rest: &'a [Arc<Message>],
    /// The part of `rest[0]`'s event being written (see `Message::sse_framed`).
    part: usize,
    /// Bytes of that part already written.
    at: usize,
    left: usize,
}

impl<'a> Framed<'a> {
    fn new(batch: &'a [Arc<Message>]) -> Framed<'a> {
        let left = batch.iter().map(|m| m.sse_framed_len()).sum();
        Framed {
            rest: batch,
            part: 0,
            at: 0,
            left,
        }
    }
}

impl Buf for Framed<'_> {
    fn remaining(&self) -> usize {
        self.left
    }

    fn chunk(&self) -> &[u8] {
        // `at` is always inside its part, and no part is empty.
        self.rest
            .first()
            .map_or(&[], |m| &m.sse_framed()[self.part][self.at..])
    }

    fn advance(&mut self, mut n: usize) {
        self.left -= n.min(self.left);
        while let Some(first) = self.rest.first() {
            let here = first.sse_framed()[self.part].len() - self.at;
            if n < here {
                self.at += n;
                return;
            }
            n -= here;
            self.at = 0;
            self.part += 1;
            if self.part == 3 {
                self.part = 0;
                self.rest = &self.rest[1..];
            }
        }
    }

    fn chunks_vectored<'b>(&'b self, dst: &mut [IoSlice<'b>]) -> usize {
        let mut n = 0;
        let (mut from, mut at) = (self.part, self.at);
        for m in self.rest {
            for part in &m.sse_framed()[from..] {
                let Some(slot) = dst.get_mut(n) else {
                    return n;
                };
                *slot = IoSlice::new(&part[at..]);
                at = 0;
                n += 1;
            }
            from = 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<Arc<Message>> {
        (1..=3)
            .map(|i| {
                let data = format!("{{\"n\":{i}}}");
                let at = std::time::Instant::now();
                Arc::new(Message::new(
                    "c".into(),
                    MessageId::new(7, i),
                    data.as_bytes(),
                    at,
                ))
            })
            .collect()
    }

    fn whole(batch: &[Arc<Message>]) -> Vec<u8> {
        batch.iter().flat_map(|m| m.sse_framed().concat()).collect()
    }

    #[test]
    fn framed_events_carry_the_cursor_of_a_one_channel_stream() {
        let batch = batch();
        let mut opened = Opened {
            channels: vec!["c".into()],
            positions: vec![MessageId::ZERO],
        };
        let mut encoded = Vec::new();
        opened.encode(&batch, &mut encoded);
        assert_eq!(encoded, whole(&batch));
        let mut framed = Framed::new(&batch);
        assert_eq!(framed.copy_to_bytes(framed.remaining()), whole(&batch));
    }

    #[test]
    fn framed_resumes_after_partial_writes() {
        let batch = batch();
        let all = whole(&batch);
        let first = batch[0].sse_framed_len();
        // Partial writes: inside the first event, to its end, into the third.
        // Partial writes: inside the first event's head, at its end, inside
        // a tail, at a part's end.
        let head = batch[0].sse_framed()[0].len();
        for cut in [
            3,
            head,
            head + 1,
            first - 2,
            first - 1,
            first,
            first + batch[1].sse_framed_len() + 2,
        ] {
            let mut framed = Framed::new(&batch);
            framed.advance(cut);
            assert_eq!(framed.remaining(), all.len() - cut);
            let mut slices = [IoSlice::new(&[]); 64];
            let parts = framed.chunks_vectored(&mut slices);
            let rest: Vec<u8> = slices[..parts].iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(rest, all[cut..]);
            assert_eq!(framed.chunk(), &slices[0][..]);
            // Fewer slots than parts: a prefix, in order.
            let mut few = [IoSlice::new(&[]); 4];
            let n = framed.chunks_vectored(&mut few);
            assert_eq!(n, parts.min(4));
            let prefix: Vec<u8> = few[..n].iter().flat_map(|s| s.to_vec()).collect();
            assert!(all[cut..].starts_with(&prefix));
        }
    }
}
