//! Client transports: the connection core ([`core`]) and the framing of
//! WebSocket ([`ws`]) and Server-Sent Events ([`sse`]) under it, plus the
//! acknowledged-delivery policy ([`acks`]). The HTTP layer upgrades or opens
//! a connection and hands it to [`core::Core::run`].

pub(crate) mod acks;
pub(crate) mod core;
mod gate;
pub(crate) mod sse;
pub(crate) mod ws;
