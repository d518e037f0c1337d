//! Integration tests: a real server on loopback, real WebSocket, SSE and
//! HTTP clients. One test binary, one module per area.

mod acks;
mod api;
mod auth;
mod common;
mod keepalive;
mod lifecycle;
mod sse;
mod ws;
