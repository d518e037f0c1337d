//! # push-server
//!
//! A real-time push messaging server: clients subscribe to channels over
//! WebSocket or Server-Sent Events, backends publish over HTTP; history and
//! gap-free resume come from the broker. `docs/protocol.md` is the wire
//! contract; `docs/architecture.md` draws the module graph below.
//!
//! ## Layout
//!
//! Dependencies point one way, top to bottom; no module reaches up.
//!
//! - `http`: the accept loop, hyper, the router and the handlers of the API
//!   (`http::api`), the WebSocket handshake on the raw socket or through
//!   hyper (`http::ws`), SSE on the raw socket or through hyper (`http::sse`), the plain publish on the raw
//!   socket with pipelined answers in one write (`http::publish`), the one origin policy
//!   (`http::origin`) and unread request bodies (`http::body`). Holds
//!   [`Server`], the crate's entry point.
//! - `transport`: one connection's life, written once over a small
//!   `Transport` trait (`transport::core`): subscriptions, resume,
//!   heartbeats, idle timeout, lifetime, drain, token expiry, slow
//!   consumers, acknowledged delivery (`transport::acks`); the read is
//!   polled only once it woke the task (`transport::gate`). WebSocket and
//!   SSE supply framing and I/O only (`transport::ws`, `transport::sse`),
//!   and on the raw socket a lane through which the hub writes deliveries
//!   itself while the task waits.
//! - `node`: the facade handlers and connections talk to — subscribe,
//!   resume, publish (the one publish path), history, presence, admission,
//!   the drain — over the hub (`node::hub`: local subscriptions and fan-out
//!   into bounded per-connection queues, or through a connection's lane),
//!   the broker and auth.
//! - `broker`: the `Broker` trait — publish (assigns the id, appends
//!   history, delivers live), read history, subscribe once per channel per
//!   node — in process (`broker::memory`) or on Redis (`broker::redis`).
//! - `auth`: who may subscribe and publish (JWT, publish keys).
//! - `protocol`: the wire contract without I/O — channel names, message ids
//!   and the pre-encoded `Message` shared by every subscriber, SSE cursors,
//!   client frames parsed into a `ClientCommand`, server frames, and the one
//!   error vocabulary (`ErrorCode`, `Error`, `Disconnect`).
//! - [`config`] and `metrics`: every setting (names, duration grammar and
//!   start-up checks from the `push-config` crate, shared with the
//!   operator); Prometheus metrics, with `push_build_info` and the
//!   `process_*` collector. Used by every layer, they use none.
//! - `fuzzing` (hidden): the entry points of the fuzz targets in `fuzz/`,
//!   which call `protocol` and `config`.
//!
//! Only [`Server`], [`Config`] (with [`config`]), [`HEADER_READ_TIMEOUT`] and
//! the fuzzing entry points are public: what the binary and the tests use.

mod auth;
mod broker;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod metrics;
mod node;
mod protocol;
mod transport;

pub use config::Config;
pub use http::{Server, StartError, HEADER_READ_TIMEOUT};
