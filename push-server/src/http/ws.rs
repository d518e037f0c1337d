//! `GET /ws`: the WebSocket handshake. Checks, admission and buffer sizes
//! here; the connection itself is [`crate::transport::core`]'s.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::Principal;
use crate::metrics::Transport;
use crate::protocol::{parse_channels, Channel, Error, ErrorCode};
use crate::transport::core::Core;
use crate::transport::ws::{Ws, READ_BUFFER, WRITE_BUFFER};

/// `GET /ws?channels=a,b&token=…`
pub(super) async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (channels, principal) = match prepare(&state, &query, &headers) {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return Error::new(ErrorCode::WebsocketRequired, e.body_text()).into_response(),
    };
    let node = state.node;
    let permit = match node.admit(Transport::Ws, peer.ip()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let max = node.config.max_message_bytes + 1024;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            // A task of its own: axum's upgrade future (and the arguments it
            // held) is freed instead of wrapping the connection for its whole
            // life. The core is built synchronously so that the arguments are
            // moved into it once, not kept beside it.
            let core = Core::new(node, principal, permit);
            tokio::spawn(core.run(Ws(socket), true, channels));
        })
}

fn prepare(
    state: &AppState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Vec<Channel>, Principal), Error> {
    let node = &state.node;
    if node.is_draining() {
        return Err(Error::draining());
    }
    if !state.origins.admits(headers) {
        return Err(Error::new(
            ErrorCode::ForbiddenOrigin,
            "this Origin is not allowed",
        ));
    }
    let channels = parse_channels(
        query.get("channels").map(String::as_str),
        node.config.max_channels_per_connection,
    )?;
    let principal = node.subscriber(query.get("token").map(String::as_str), headers)?;
    Ok((channels, principal))
}
