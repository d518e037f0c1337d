//! Client transports: WebSocket ([`ws`]) and Server-Sent Events ([`sse`]).
//! Both admit the connection, open a [`crate::hub::Session`] and write the
//! pre-encoded messages that arrive in its bounded queue.

pub mod acks;
pub mod cursor;
pub mod sse;
pub mod ws;

use crate::error::ApiError;
use crate::message::{validate_channel, Channel};

pub use crate::hub::WRITE_BATCH;

/// Parses `channels=a,b` (empty entries ignored, duplicates removed, order
/// kept) and checks names and count.
pub fn parse_channels(list: Option<&str>, max: usize) -> Result<Vec<Channel>, ApiError> {
    let mut out: Vec<Channel> = Vec::new();
    for name in list.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        validate_channel(name)?;
        if !out.iter().any(|c| &**c == name) {
            out.push(name.into());
        }
    }
    if out.len() > max {
        return Err(ApiError::bad_request(
            "too_many_channels",
            format!("a connection may hold at most {max} subscriptions"),
        ));
    }
    Ok(out)
}
