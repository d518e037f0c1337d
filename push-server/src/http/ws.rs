//! `GET /ws`: the WebSocket handshake. Checks, admission and buffer sizes
//! here; the connection itself is [`crate::transport::core`]'s.
//!
//! A connection whose first request is a plain handshake is served on the
//! raw socket ([`serve_raw`]): the socket is then shared with the
//! connection's lane, which lets the fan-out write deliveries itself
//! (docs/architecture.md, "The lane"). Anything else about the request (a
//! body, an odd header, HTTP/1.0) hands the connection, with what was read
//! of it, to hyper and the router's [`handler`], which answer as before; so
//! does `/ws` as a later request of a keep-alive connection.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::publish::Rewind;
use super::{AppState, HEADER_READ_TIMEOUT};
use crate::auth::Principal;
use crate::metrics::Transport;
use crate::protocol::{parse_channels, Channel, Error, ErrorCode};
use crate::transport::core::Core;
use crate::transport::ws::{ws_config, RawIo, Ws};

/// `GET /ws?channels=a,b&token=…`, through hyper.
pub(super) async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    mut req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    let (channels, principal) = match prepare(&state, &query, headers) {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(),
    };
    let key = match handshake(&method, headers) {
        Ok(key) => key,
        Err(why) => return Error::new(ErrorCode::WebsocketRequired, why).into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Error::new(
            ErrorCode::WebsocketRequired,
            "this connection cannot be upgraded",
        )
        .into_response();
    };
    let node = state.node;
    let permit = match node.admit(Transport::Ws, peer.ip()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = ws_config(&node.config);
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        // Built synchronously: the arguments are moved into the core once,
        // not kept beside it.
        let core = Core::new(node, principal, permit);
        tokio::spawn(core.run(Ws(socket), true, channels));
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// The handshake's own checks (RFC 6455 4.2.1, as axum makes them): the
/// client's key, or why this is not a WebSocket handshake.
fn handshake(method: &Method, headers: &HeaderMap) -> Result<String, &'static str> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if method != Method::GET {
        return Err("Request method must be `GET`");
    }
    if !has(header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !has(header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("`Sec-WebSocket-Version` header did not include '13'");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .map(str::to_string)
        .ok_or("`Sec-WebSocket-Key` header missing")
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

/// Largest handshake served on the raw socket; a larger one goes to hyper.
const MAX_HEAD: usize = 16 * 1024;

/// A plain handshake, as the raw path serves it.
struct Plain {
    head_len: usize,
    query: HashMap<String, String>,
    headers: HeaderMap,
    key: String,
}

/// Whether `got` starts with a whole request this path serves: `GET /ws`
/// over HTTP/1.1, a valid handshake, no body. `Err(true)` while more bytes
/// could tell, `Err(false)` for anything that is hyper's.
fn plain(got: &[u8]) -> Result<Plain, bool> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(got) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(got.len() < MAX_HEAD),
        Err(_) => return Err(false),
    };
    if req.version != Some(1) {
        return Err(false);
    }
    let path = req.path.unwrap_or("/");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path != "/ws" {
        return Err(false);
    }
    let query: HashMap<String, String> = serde_urlencoded::from_str(query).map_err(|_| false)?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| false)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| false)?;
        headers.append(name, value);
    }
    if headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(false);
    }
    let key = handshake(&Method::GET, &headers).map_err(|_| false)?;
    Ok(Plain {
        head_len,
        query,
        headers,
        key,
    })
}

/// Serves a connection whose first bytes are `GET /ws`: a plain handshake
/// here, anything else through hyper, with what was read of it.
pub(super) async fn serve_raw(
    state: AppState,
    router: Router,
    mut tcp: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    let hs = loop {
        match plain(&buf) {
            // Only the handshake: what a client sends after it before the
            // answer (it should not) is left to hyper with the rest.
            Ok(hs) if hs.head_len == buf.len() => break hs,
            Ok(_) | Err(false) => {
                let io = Rewind { pre: buf, io: tcp };
                return super::serve_http(router, io, peer, stop).await;
            }
            Err(true) => match tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Gone, failed, or too slow (the header-read bound).
                _ => return,
            },
        }
    };
    drop(buf);
    let cors = state.origins.allow_origin(&hs.headers);
    let (channels, principal) = match prepare(&state, &hs.query, &hs.headers) {
        Ok(prepared) => prepared,
        Err(e) => return super::sse::write_error(&mut tcp, e, cors.as_deref()).await,
    };
    let node = state.node.clone();
    let permit = match node.admit(Transport::Ws, peer.ip()) {
        Ok(p) => p,
        Err(e) => return super::sse::write_error(&mut tcp, e, cors.as_deref()).await,
    };
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ",
    );
    out.extend_from_slice(derive_accept_key(hs.key.as_bytes()).as_bytes());
    out.extend_from_slice(b"\r\n");
    super::sse::push_cors(&mut out, cors.as_deref());
    out.extend_from_slice(b"\r\n");
    drop(hs);
    let limit = node.config.idle_timeout;
    let written = tokio::time::timeout(limit, tcp.write_all(&out)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let mut core = Core::new(node.clone(), principal, permit);
    let (io, lane) = RawIo::new(tcp, core.shared());
    core.set_lane(lane);
    let config = ws_config(&node.config);
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    tokio::spawn(core.run(Ws(socket), true, channels));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HS: &str = "GET /ws?channels=a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn plain_handshakes_are_served_raw_and_the_rest_by_hyper() {
        let hs = plain(HS.as_bytes()).map_err(|_| ()).expect("plain");
        assert_eq!(hs.head_len, HS.len());
        assert_eq!(hs.query["channels"], "a");
        assert_eq!(hs.key, "dGhlIHNhbXBsZSBub25jZQ==");
        // More to come.
        assert!(matches!(plain(&HS.as_bytes()[..40]), Err(true)));
        // hyper's: HTTP/1.0, another path, a body, no upgrade, version 8.
        for other in [
            HS.replace("HTTP/1.1", "HTTP/1.0"),
            HS.replace("/ws?", "/wsx?"),
            HS.replace("Host: x", "Host: x\r\nContent-Length: 0"),
            HS.replace("Upgrade: websocket\r\n", ""),
            HS.replace("Version: 13", "Version: 8"),
        ] {
            assert!(matches!(plain(other.as_bytes()), Err(false)), "{other}");
        }
    }
}
