//! Reliability tests (issue 8, docs/reliability.md): bad input of every
//! kind, hostile clients, faults, and a soak. Real servers on loopback,
//! real sockets; every wait is bounded.
//!
//! - [`props`], [`props_ws`]: property-based tests of every client-facing
//!   parser (HTTP bodies, channel names, ids, cursors, query strings,
//!   tokens, WebSocket frames).
//! - [`hostile`]: slow-loris, clients that never read, connection churn.
//! - [`sigterm`]: SIGTERM during heavy publishing; nothing accepted is lost.
//! - [`redis_faults`]: faults that need Redis (a node SIGKILLed, Redis
//!   paused, killed and restarted, the Sentinel master killed), counted.
//! - [`soak`]: churn plus publishing over time (`#[ignore]`: `make soak`,
//!   `make soak-redis` for two nodes on Redis).
//! - [`regressions`]: inputs that once broke something, kept forever,
//!   and the fuzzers' seeds and crashes replayed.

mod common;
mod hostile;
mod props;
mod props_ws;
mod rawws;
mod redis_faults;
#[path = "../redis/procs.rs"]
mod redisprocs;
mod regressions;
mod sigterm;
mod soak;
