//! # push-server
//!
//! A real-time push messaging server: clients subscribe to channels over
//! WebSocket or Server-Sent Events, backends publish over HTTP; history and
//! gap-free resume come from the broker. See `docs/` for the protocol.
//!
//! ## Layout
//!
//! Dependencies point one way: `transport` → `hub` → `broker`.
//!
//! - [`config`]: every setting, as flag, `PUSH_*` variable and YAML key.
//! - [`message`]: channel names, message ids and the [`message::Message`]
//!   that is encoded once and shared by every subscriber.
//! - [`broker`]: the [`broker::Broker`] trait — publish (assigns the id,
//!   appends history, delivers live), read history, subscribe once per
//!   channel per node — and its in-process implementation
//!   [`broker::memory`].
//! - [`hub`]: local subscriptions and fan-out into bounded per-connection
//!   queues; slow consumers; the per-connection [`hub::Session`] that makes
//!   resume gap-free and duplicate-free.
//! - [`transport`]: the WebSocket and SSE protocols on top of a session;
//!   SSE requests skip hyper and are served on the raw socket (memory), and
//!   [`transport::acks`] holds the acknowledged-delivery policy.
//! - [`api`]: publish, history and presence over HTTP.
//! - [`auth`]: who may subscribe and publish.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: shared state, admission, router, start-up and drain.
//! - [`error`]: the JSON error of every HTTP endpoint.
//! - `fuzzing` (hidden): the entry points of the fuzz targets in `fuzz/`.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod message;
pub mod metrics;
pub mod server;
pub mod transport;

pub use config::Config;
pub use server::Server;
