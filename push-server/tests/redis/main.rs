//! Integration tests of the Redis broker against real Redis processes
//! (single, Sentinel, Cluster). Run with `make test-redis`, which installs
//! redis-server when missing.

mod auth;
mod cluster;
#[path = "../server/common.rs"]
mod common;
mod nodes;
mod pipelining;
mod presence;
mod procs;
mod sentinel;
mod single;
mod tls;
mod tokens;
