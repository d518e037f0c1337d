//! The HTTP layer: the accept loop, hyper with upgrades, the router and its
//! handlers; the raw SSE and publish fast paths ([`sse`], [`publish`]),
//! which hand anything unusual to hyper; the one origin policy
//! ([`origin`]); what happens to unread request bodies ([`body`]).
//!
//! Handlers translate HTTP into calls on the [`Node`] and [`Error`]s into
//! answers: `{"error":{"code","message"}}` with the code's status.

mod api;
mod body;
mod origin;
mod publish;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::node::{Node, NodeError};
use crate::protocol::{Error, ErrorCode};
use origin::Origins;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Longest wait for a request's headers (slow-loris bound); also how long an
/// idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler gets.
#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    origins: Arc<Origins>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.http_body(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A running node.
pub struct Server {
    node: Arc<Node>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    /// The accept loop.
    http: JoinHandle<()>,
    /// Stops accepting and asks every HTTP connection to finish.
    stop_http: CancellationToken,
    /// Every HTTP connection task (upgraded WebSockets leave it).
    http_conns: TaskTracker,
}

impl Server {
    /// Builds the node, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let listen = config.listen;
        let node = Node::new(config)?;
        let bind_error = |source| StartError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        // Bound before serving anything, so a taken metrics port fails the start.
        let metrics_listener = match node.config.metrics_listen {
            Some(maddr) => {
                let bind_error = |source| StartError::Bind {
                    addr: maddr,
                    source,
                };
                let l = TcpListener::bind(maddr).await.map_err(bind_error)?;
                let local = l.local_addr().map_err(bind_error)?;
                Some((l, local))
            }
            None => None,
        };
        let state = AppState {
            origins: Arc::new(Origins::new(&node.config.allowed_origins)),
            node: node.clone(),
        };
        let stop_http = CancellationToken::new();
        let http_conns = TaskTracker::new();
        let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
        if let Some((l, maddr)) = metrics_listener {
            http_conns.spawn(metrics_loop(
                state.clone(),
                l,
                stop_http.clone(),
                http_conns.clone(),
            ));
            tracing::info!(addr = %maddr, "metrics listening");
        }
        let http = tokio::spawn(accept_loop(
            state,
            listener,
            stop_http.clone(),
            http_conns.clone(),
        ));
        tracing::info!(%addr, "push-server listening");
        Ok(Server {
            node,
            addr,
            metrics_addr,
            http,
            stop_http,
            http_conns,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Drains (readiness 503, every connection told to reconnect within the
    /// drain period), waits until every connection left or the drain period
    /// passed, then stops the HTTP server.
    pub async fn shutdown(self) {
        self.node.start_drain();
        if let Some(left) = self.node.wait_drained().await {
            tracing::warn!(left, "drain period over; closing the rest");
        }
        self.stop_http.cancel();
        let _ = self.http.await;
        // In-flight API requests finish; idle keep-alive connections close.
        self.http_conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_conns.wait()).await;
        tracing::info!("stopped");
    }
}

/// Accepts connections and serves HTTP/1.1 with upgrades. Our own loop (not
/// `axum::serve`) so that every connection gets a header-read timeout, socket
/// options, the raw SSE path, and a graceful shutdown we can wait for.
async fn accept_loop(
    state: AppState,
    listener: TcpListener,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    let router = router(state.clone());
    let user_timeout = state.node.config.idle_timeout;
    loop {
        let Some((tcp, peer)) = accept(&listener, &stop, "accept").await else {
            return;
        };
        // A peer that stops acknowledging our writes for this long fails them,
        // so a client that stops reading cannot pin a connection forever.
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_nodelay(true);
        let _ = sock.set_tcp_user_timeout(Some(user_timeout));

        let router = router.clone();
        let state = state.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            // Event streams, WebSocket handshakes and publishes skip hyper
            // (see sse::serve_raw, ws::serve_raw, publish::serve_raw).
            match sniff(&tcp).await {
                First::Sse => sse::serve_raw(state, tcp, peer).await,
                First::Ws => ws::serve_raw(state, router, tcp, peer, stop).await,
                First::Publish => publish::serve_raw(state, router, tcp, peer, stop).await,
                First::Other => serve_http(router, tcp, peer, stop).await,
            }
        });
    }
}

/// What a fresh connection's first request is, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// `GET /sse?…` or `GET /sse `.
    Sse,
    /// `GET /ws?…` or `GET /ws `.
    Ws,
    /// `POST /api/v1/channels/…`.
    Publish,
    Other,
}

/// Peeks (does not read) a fresh connection's first bytes, waiting at most
/// [`HEADER_READ_TIMEOUT`] for them.
async fn sniff(tcp: &tokio::net::TcpStream) -> First {
    let mut buf = [0u8; 22];
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    loop {
        // Checked here too: a peek of bytes already there is ready at once,
        // so `timeout_at` alone would never end a request line that stops
        // short (a client that sent `GET /s` and went away).
        if tokio::time::Instant::now() >= deadline {
            return First::Other;
        }
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return First::Other,
        };
        match first(&buf[..n]) {
            Some(first) => return first,
            // A request line arriving in pieces: peek again shortly.
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// [`First`] of these bytes, or `None` while more could tell.
fn first(got: &[u8]) -> Option<First> {
    const SSE: &[u8] = b"GET /sse";
    const WS: &[u8] = b"GET /ws";
    const PUBLISH: &[u8] = b"POST /api/v1/channels/";
    for (path, is) in [(SSE, First::Sse), (WS, First::Ws)] {
        if got.len() > path.len() && got.starts_with(path) {
            return Some(match got[path.len()] {
                b'?' | b' ' => is,
                _ => First::Other,
            });
        }
    }
    if got.starts_with(PUBLISH) {
        return Some(First::Publish);
    }
    let could = |p: &[u8]| got.len() < p.len() && p.starts_with(got) || p == got;
    if could(SSE) || could(WS) || could(PUBLISH) {
        return None;
    }
    Some(First::Other)
}

/// The separate metrics port (`metrics_listen`): `/metrics` only, so that
/// scrapes need no route to the public port and the public port does not
/// show the metrics (docs/operations.md).
/// The next connection, or `None` once `stop` is cancelled. A failed accept
/// (out of file descriptors and the like) is logged, and after a short back
/// off the listener keeps serving.
async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!("{what} failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn metrics_loop(
    state: AppState,
    listener: TcpListener,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { Error::not_found() })
        .with_state(state);
    loop {
        let Some((tcp, peer)) = accept(&listener, &stop, "metrics accept").await else {
            return;
        };
        let router = router.clone();
        let stop = stop.clone();
        conns.spawn(serve_http(router, tcp, peer, stop));
    }
}

/// Serves one HTTP/1.1 connection with upgrades (WebSocket) until it ends or
/// `stop` asks it to finish.
async fn serve_http<I>(router: Router, tcp: I, peer: SocketAddr, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let (body, unread) = body::track(body, &parts.headers);
        let call =
            tower::Service::call(&mut router.clone(), hyper::Request::from_parts(parts, body));
        async move {
            // Infallible: axum's router answers every request.
            let resp = call.await?;
            Ok::<_, std::convert::Infallible>(match unread {
                Some(unread) => unread.settle(resp).await,
                None => resp,
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn router(state: AppState) -> Router {
    let cors = state.origins.cors_layer();
    // Publish bodies are read by the handlers with the limits of
    // docs/protocol.md, after auth (see api::read_body).
    let separate_metrics = state.node.config.metrics_listen.is_some();
    let routes = Router::new()
        .route(
            "/api/v1/channels/{channel}/messages",
            post(api::publish_one).get(api::history),
        )
        .route("/api/v1/channels/{channel}/presence", get(api::presence))
        .route("/api/v1/publish", post(api::publish_batch))
        .route("/sse", get(sse::handler))
        .route("/ws", get(ws::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // With metrics_listen set, the public port answers 404 for /metrics.
    let routes = if separate_metrics {
        routes
    } else {
        routes.route("/metrics", get(metrics))
    };
    routes
        .fallback(|| async { Error::not_found() })
        .method_not_allowed_fallback(|| async {
            Error::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            )
        })
        .with_state(state)
        // Outermost, so that preflight requests never reach routing.
        .layer(cors)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.node.ready() {
        Err(e) => e.into_response(),
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.node.metrics_text(),
    )
}

#[cfg(test)]
mod tests {
    use super::{first, First};

    #[test]
    fn first_bytes_pick_the_path() {
        let cases: &[(&[u8], Option<First>)] = &[
            (b"GET /sse?channels=a", Some(First::Sse)),
            (b"GET /sse HTTP/1.1", Some(First::Sse)),
            (b"GET /sse", None),
            (b"GET /s", None),
            (b"GET /ssex", Some(First::Other)),
            (b"GET /ws?", Some(First::Ws)),
            (b"GET /ws HTTP/1.1", Some(First::Ws)),
            (b"GET /ws", None),
            (b"GET /wsx", Some(First::Other)),
            (b"POST /api/v1/channels/a/messages", Some(First::Publish)),
            (b"POST /api/v1/channels/", Some(First::Publish)),
            (b"POST /api/v1/chan", None),
            (b"POST /api/v1/publish", Some(First::Other)),
            (b"G", None),
            (b"P", None),
            (b"DELETE", Some(First::Other)),
        ];
        for (got, want) in cases {
            assert_eq!(&first(got), want, "{:?}", String::from_utf8_lossy(got));
        }
    }
}
