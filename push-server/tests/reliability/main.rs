//! Reliability tests (issue 8, docs/reliability.md): bad input of every
//! kind, hostile clients, faults, and a soak. Real servers on loopback,
//! real sockets; every wait is bounded.
//!
//! - [`props`], [`props_ws`]: property-based tests of every client-facing
//!   parser (HTTP bodies, channel names, ids, cursors, query strings,
//!   tokens, WebSocket frames).
//! - [`regressions`]: inputs that once broke something, kept forever.

mod common;
mod hostile;
mod props;
mod props_ws;
mod rawws;
mod regressions;
