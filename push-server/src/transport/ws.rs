//! WebSocket framing (docs/protocol.md, "WebSocket"): text frames in and
//! out, Ping as the heartbeat, close codes. The connection's life is
//! [`super::core`]'s.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};

use super::core::{Gone, Received, Transport};
use crate::config::Config;
use crate::metrics;
use crate::protocol::{Disconnect, Message};

/// Initial tungstenite read buffer, and the most it reads at a time: small,
/// because clients send little (subscribe, ack, ping) and it is allocated
/// per connection (tungstenite's default is 128 KiB). A larger frame grows
/// it to the frame's size and is read 256 bytes a time; 512 here was an
/// eighth of an idle WebSocket connection's memory (docs/benchmarks.md).
pub(crate) const READ_BUFFER: usize = 256;
/// Bytes buffered before tungstenite writes; we flush after each batch anyway.
pub(crate) const WRITE_BUFFER: usize = 16 * 1024;

/// An upgraded WebSocket.
pub(crate) struct Ws(pub(crate) WebSocket);

/// The last words are short: a slow consumer may not read them at all.
const GOODBYE: Duration = Duration::from_secs(1);

impl Transport for Ws {
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
            Some(Ok(WsMessage::Close(_)) | Err(_)) | None => Received::Gone,
        })
    }

    async fn close(&mut self, why: Disconnect, retry_ms: u64) {
        if let Some(frame) = why.ws_frame(retry_ms) {
            let _ = tokio::time::timeout(GOODBYE, self.0.send(WsMessage::Text(frame.into()))).await;
        }
        let (code, reason) = why.close();
        let frame = WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(GOODBYE, self.0.send(frame)).await;
    }
}
