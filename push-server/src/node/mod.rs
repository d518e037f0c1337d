//! The node: one facade over the hub, the broker, auth and the limits.
//! Connections and HTTP handlers ask it to subscribe, resume, publish, read
//! history and presence, admit a connection, or say when to drain; they
//! never reach the hub or the broker themselves.
//!
//! Publishing has one path, [`Node::publish`] (and [`Node::publish_batch`],
//! which checks every item the same way before publishing any): HTTP, batch
//! and WebSocket publishes are checked in one order and counted once.

mod admit;
mod hub;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, AuthConfigError, Principal};
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{Passwords, RedisBroker, Settings, Target, TargetError};
use crate::broker::{Broker, History};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::message::validate_channel;
use crate::protocol::{Channel, Data, Error, ErrorCode, MessageId};

pub(crate) use admit::ConnPermit;
/// What a connection holds of the hub: its session and queue.
pub(crate) use hub::{
    ConnShared, Inbound, Lane, Receiver, Session, Subscribed, Wrote, WRITE_BATCH,
};
use hub::{Hub, Registry, SubscribeError};

/// Why the node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Redis(#[from] TargetError),
}

/// State shared by every handler and connection of the node.
pub(crate) struct Node {
    pub(crate) config: Config,
    hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    auth: Auth,
    /// Whether history survives this process (Redis): publishing then goes
    /// on while draining.
    durable: bool,
    /// Set on SIGTERM: readiness 503, new connections 503.
    draining: AtomicBool,
    /// Cancelled when the drain starts; connections then pick their moment.
    drain: CancellationToken,
    /// Every open WebSocket/SSE connection holds a token of it.
    tracker: TaskTracker,
    /// Open WebSocket + SSE connections, for `max_connections`.
    connections: AtomicUsize,
    /// Open connections per client IP, when `max_connections_per_ip` is set.
    per_ip: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// A publish that passed every check, ready for the broker.
struct Checked<'a> {
    channel: &'a str,
    data: Vec<u8>,
}

impl Node {
    /// Builds auth, metrics, the broker and the hub from the configuration.
    pub(crate) fn new(config: Config) -> Result<Arc<Node>, NodeError> {
        let auth = Auth::from_config(&config)?;
        if !auth.enabled() {
            tracing::warn!("auth is off: any client may subscribe to any channel (set --jwt-secret or --jwt-public-key)");
        }
        if !auth.publish_protected() {
            tracing::warn!("publishing is open to anyone (set --publish-key or a JWT key)");
        }
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new();
        let durable = config.redis_url.is_some()
            || !config.redis_sentinel.is_empty()
            || !config.redis_cluster.is_empty();
        let broker: Arc<dyn Broker> = if durable {
            let target = Target::from_config(
                config.redis_url.as_deref(),
                &config.redis_sentinel,
                config.redis_master_name.as_deref(),
                &config.redis_cluster,
                config.redis_ca_file.as_deref(),
                Passwords {
                    redis: config.redis_password.as_deref(),
                    sentinel: config.redis_sentinel_password.as_deref(),
                },
            )?;
            let settings = Settings {
                history_size: config.history_size,
                history_ttl: config.history_ttl,
                publish_min_replicas: config.publish_min_replicas,
            };
            Arc::new(RedisBroker::new(target, settings, registry.clone()))
        } else {
            MemoryBroker::new(config.history_size, config.history_ttl)
        };
        metrics.broker_up.set(broker.is_up() as i64);
        let hub = Arc::new(Hub::new(registry, broker, metrics.clone()));
        Ok(Arc::new(Node {
            config,
            hub,
            metrics,
            auth,
            durable,
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(Default::default()),
        }))
    }

    // ---- auth ----

    /// A subscriber: `token=` (browsers cannot set WebSocket headers) or
    /// `Authorization: Bearer`.
    pub(crate) fn subscriber(
        &self,
        query_token: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, Error> {
        Ok(self
            .auth
            .subscriber(crate::auth::bearer(query_token, headers))?)
    }

    /// A publisher: a publish key or a JWT with `publish`.
    pub(crate) fn publisher(&self, headers: &axum::http::HeaderMap) -> Result<Principal, Error> {
        Ok(self.auth.publisher(headers)?)
    }

    /// A publisher from its bearer token, already taken from the header.
    pub(crate) fn publisher_bearer(&self, token: Option<&str>) -> Result<Principal, Error> {
        Ok(self.auth.publisher_bearer(token)?)
    }

    /// A reader of history or presence: a subscriber token or a publish key.
    pub(crate) fn reader(
        &self,
        query_token: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, Error> {
        Ok(self.auth.reader(query_token, headers)?)
    }

    // ---- publish: the one path ----

    /// Every check of a publish, in one order for every route: channel,
    /// draining, size, permission, data.
    fn check_publish<'a>(
        &self,
        principal: &Principal,
        channel: &'a str,
        data: Data<'_>,
    ) -> Result<Checked<'a>, Error> {
        validate_channel(channel)?;
        self.check_publish_allowed()?;
        let limit = self.config.max_message_bytes;
        if data.size() > limit {
            return Err(Error::too_large(limit));
        }
        if !principal.may_publish(channel) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!("not allowed to publish to channel {channel:?}"),
            ));
        }
        Ok(Checked {
            channel,
            data: data.encode()?,
        })
    }

    /// Refuses a publish while draining on the memory broker: its history
    /// dies with the process, so a message accepted now might reach no one
    /// and could not be resumed. Better a 503 the publisher can retry than an
    /// accepted message that is lost. (Redis keeps history: publishes go on.)
    fn check_publish_allowed(&self) -> Result<(), Error> {
        if self.is_draining() && !self.durable {
            return Err(Error::draining());
        }
        Ok(())
    }

    async fn publish_checked(&self, checked: Checked<'_>) -> Result<MessageId, Error> {
        let id = self
            .hub
            .broker()
            .publish(checked.channel, checked.data.into())
            .await
            .map_err(broker_error)?;
        self.metrics.published.inc();
        Ok(id)
    }

    /// Checks and publishes one message; its id.
    pub(crate) async fn publish(
        &self,
        principal: &Principal,
        channel: &str,
        data: Data<'_>,
    ) -> Result<MessageId, Error> {
        let checked = self.check_publish(principal, channel, data)?;
        self.publish_checked(checked).await
    }

    /// Checks every message, then publishes them in order: a refused batch
    /// publishes nothing. A broker failure midway says how many went out.
    pub(crate) async fn publish_batch(
        &self,
        principal: &Principal,
        items: &[(&str, Data<'_>)],
    ) -> Result<Vec<(Channel, MessageId)>, Error> {
        self.check_publish_allowed()?;
        let mut ready = Vec::with_capacity(items.len());
        for (i, (channel, data)) in items.iter().enumerate() {
            let checked = self
                .check_publish(principal, channel, *data)
                .map_err(|e| e.prefixed(format_args!("messages[{i}]")))?;
            ready.push(checked);
        }
        let total = ready.len();
        let mut out = Vec::with_capacity(total);
        for (done, checked) in ready.into_iter().enumerate() {
            let channel: Channel = checked.channel.into();
            match self.publish_checked(checked).await {
                Ok(id) => out.push((channel, id)),
                Err(mut e) => {
                    e.message =
                        format!("{} ({done} of {total} messages were published)", e.message);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    // ---- reading ----

    fn check_read(&self, principal: &Principal, channel: &str) -> Result<(), Error> {
        if !principal.may_subscribe(channel) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!("the token does not grant channel {channel:?}"),
            ));
        }
        Ok(())
    }

    /// A page of history after `since` (exclusive).
    pub(crate) async fn history(
        &self,
        principal: &Principal,
        channel: Channel,
        since: Option<MessageId>,
        limit: usize,
    ) -> Result<History, Error> {
        self.check_read(principal, &channel)?;
        self.hub
            .broker()
            .read(channel, since, limit)
            .await
            .map_err(broker_error)
    }

    /// Connections and users on `channel`: every live node's with Redis,
    /// this node's alone.
    pub(crate) async fn presence(
        &self,
        principal: &Principal,
        channel: Channel,
    ) -> Result<(usize, Vec<String>), Error> {
        self.check_read(principal, &channel)?;
        match self
            .hub
            .broker()
            .presence(channel.clone())
            .await
            .map_err(broker_error)?
        {
            Some(p) => Ok((p.connections, p.users)),
            None => {
                let (connections, users) = self.hub.presence(&channel);
                Ok((connections, users.iter().map(|u| u.to_string()).collect()))
            }
        }
    }

    // ---- connections ----

    /// A connection's subscriptions and its outbound queue.
    pub(crate) fn session(&self, user: Option<Arc<str>>) -> (Session, Receiver) {
        let (shared, rx) = ConnShared::new(self.config.outbound_queue, user);
        let session = Session::new(
            self.hub.clone(),
            shared,
            self.config.max_channels_per_connection,
        );
        (session, rx)
    }

    /// Subscribes (or resumes after `since`) if the principal may.
    pub(crate) async fn subscribe(
        &self,
        session: &mut Session,
        principal: &Principal,
        channel: Channel,
        since: Option<MessageId>,
    ) -> Result<Subscribed, Error> {
        self.check_read(principal, &channel)?;
        session
            .subscribe(channel, since)
            .await
            .map_err(|e| match e {
                SubscribeError::AlreadySubscribed => {
                    Error::new(ErrorCode::AlreadySubscribed, e.to_string())
                }
                SubscribeError::TooManyChannels(_) => {
                    Error::new(ErrorCode::TooManyChannels, e.to_string())
                }
                SubscribeError::Broker(b) => broker_error(b),
            })
    }

    /// Whether the node is ready for traffic (`/readyz`).
    pub(crate) fn ready(&self) -> Result<(), Error> {
        if self.is_draining() {
            return Err(Error::draining());
        }
        let broker = self.hub.broker();
        if !broker.is_up() {
            let message = match broker.down_reason() {
                Some(reason) => format!("the broker is unreachable: {reason}"),
                None => "the broker is unreachable".to_string(),
            };
            return Err(Error::new(ErrorCode::BrokerUnavailable, message));
        }
        Ok(())
    }

    /// The OpenMetrics text.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.broker_up.set(self.hub.broker().is_up() as i64);
        self.metrics.encode()
    }
}

/// `503 broker_unavailable`, retry in a second.
fn broker_error(e: crate::broker::BrokerError) -> Error {
    Error::new(ErrorCode::BrokerUnavailable, e.to_string()).retry_after(1)
}
