//! Brokers carry published messages to every node's hub and keep history.
//!
//! The hub subscribes a channel **once per node** (on its first local
//! subscriber) and unsubscribes when the last one leaves. It hands the
//! broker the channel's [`Subscribers`] with the subscription, and the
//! broker delivers every message of the channel straight to them, in id
//! order: one channel lookup per message (the broker's), not a second one
//! in the hub's map. Publishing assigns the id, appends to the channel's history
//! and delivers live in one step, so history and live stream never disagree.
//!
//! - [`memory`]: in-process, single node (default).
//! - [`redis`]: many nodes through Redis, Sentinel or Redis Cluster.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::protocol::message::{Channel, Message, MessageId};

/// One subscribed channel's subscribers on this node (the hub's entry for
/// it), handed to the broker with the subscription: a broker delivers each
/// message straight to it, without finding the channel in the hub's map a
/// second time.
///
/// Called under the broker's own lock of the channel (the memory broker's
/// shard, the Redis dispatcher's channel map): it must not block, and must
/// not take a lock of the hub's channel map, which the hub holds while it
/// calls [`Broker::subscribe`] and [`Broker::unsubscribe`].
pub trait Subscribers: Send + Sync + 'static {
    /// A message of the channel. Must not block.
    fn deliver(&self, msg: Arc<Message>);
}

/// What a broker asks of the hub besides delivery (which goes to each
/// channel's [`Subscribers`]).
pub trait Sink: Send + Sync + 'static {
    /// Messages of `channel` were lost and history no longer holds them
    /// (e.g. published while the broker connection was down, then trimmed):
    /// its subscribers must be told instead of silently missing them.
    fn gap(&self, _channel: &Channel) {}

    /// Channels with local subscribers (presence).
    fn channels(&self) -> Vec<Channel> {
        Vec::new()
    }

    /// Local connections (and their users) on `channel` (presence).
    fn local_presence(&self, _channel: &str) -> (usize, Vec<Arc<str>>) {
        (0, Vec::new())
    }

    /// A number that changes whenever a local subscription comes or goes,
    /// so presence can skip rescanning when it did not; `None`: unknown.
    fn presence_version(&self) -> Option<u64> {
        None
    }
}

/// Who is on a channel across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Connections subscribed, on every live node.
    pub connections: usize,
    /// Distinct users (token `sub`) among them, sorted.
    pub users: Vec<String>,
}

/// A broker failure, as publishers and subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached; the request may be retried.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A page of a channel's history.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Retained messages after `since`, oldest first, at most `limit`.
    pub messages: Vec<Arc<Message>>,
    /// False when messages after `since` are no longer retained (trimmed by
    /// size or age, or from before this broker's memory): the reader has a gap.
    pub recovered: bool,
    /// The channel's newest id when read: a subscriber that has seen
    /// everything up to here resumes from here.
    pub position: MessageId,
}

/// The broker interface shared by the memory and Redis brokers.
pub trait Broker: Send + Sync + 'static {
    /// Appends `data` (one compact JSON value) to the channel and delivers it
    /// to every node subscribed to it; returns the new id.
    /// The channel is borrowed: a broker keeps its own shared name per
    /// channel, so a publish allocates none.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<MessageId, BrokerError>>;

    /// Reads retained messages after `since` (all retained ones when `None`),
    /// oldest first, at most `limit`.
    fn read(
        &self,
        channel: Channel,
        since: Option<MessageId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<History, BrokerError>>;

    /// Starts delivering `channel` to `to`. The request is queued before
    /// this returns (so subscribe/unsubscribe calls take effect in call
    /// order); the future resolves once delivery is live.
    fn subscribe(
        &self,
        channel: &Channel,
        to: Arc<dyn Subscribers>,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Stops delivering `channel`; queued in call order like `subscribe`.
    fn unsubscribe(&self, channel: &Channel);

    /// Whether the broker is reachable now (readiness, `push_broker_up`).
    fn is_up(&self) -> bool;

    /// Why the broker was last found unreachable (shown by `/readyz`).
    fn down_reason(&self) -> Option<String> {
        None
    }

    /// Presence across every node, or `None` when this node is the only one
    /// (the hub's local count is the answer).
    fn presence(&self, _channel: Channel) -> BoxFuture<'_, Result<Option<Presence>, BrokerError>> {
        futures_util::future::FutureExt::boxed(futures_util::future::ready(Ok(None)))
    }
}
