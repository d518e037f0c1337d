//! Reliability tests (issue 8, docs/reliability.md): bad input of every
//! kind, hostile clients, faults, and a soak. Real servers on loopback,
//! real sockets; every wait is bounded.
//!
//! - [`regressions`]: inputs that once broke something, kept forever.

mod common;
mod rawws;
mod regressions;
