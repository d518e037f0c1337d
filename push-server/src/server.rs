//! The node: shared state, admission of connections, the router, start-up
//! and the graceful drain.
//!
//! axum's graceful shutdown does not wait for upgraded WebSocket tasks, so
//! every WebSocket and SSE connection holds a [`ConnPermit`], which carries a
//! token of our own [`TaskTracker`]: the drain waits for the tracker, not
//! for axum.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api;
use crate::auth::{Auth, AuthConfigError};
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, Settings, Target};
use crate::broker::Broker;
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::{Hub, Registry};
use crate::metrics::{Metrics, Transport};
use crate::transport;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Redis(#[from] crate::broker::redis::TargetError),
}

/// State shared by every handler and connection of the node.
pub struct App {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// Set on SIGTERM: readiness 503, new connections 503.
    draining: AtomicBool,
    /// Cancelled when the drain starts; connections then pick their moment.
    drain: CancellationToken,
    /// Every open WebSocket/SSE connection holds a token of it.
    tracker: TaskTracker,
    /// Open WebSocket + SSE connections, for `max_connections`.
    connections: AtomicUsize,
    /// Open connections per client IP, when `max_connections_per_ip` is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's admission: released (and counted down) on drop.
pub struct ConnPermit {
    app: Arc<App>,
    transport: Transport,
    /// Counted against `max_connections_per_ip`.
    ip: Option<IpAddr>,
    _token: TaskTrackerToken,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.app.release_ip(ip);
        }
        self.app.connections.fetch_sub(1, Ordering::Relaxed);
        self.app.metrics.transport(self.transport).connections.dec();
    }
}

impl App {
    /// Admits a new client connection or says why not (503 when draining or
    /// full, with `Retry-After`).
    pub fn admit(
        self: &Arc<Self>,
        transport: Transport,
        peer: IpAddr,
    ) -> Result<ConnPermit, ApiError> {
        if self.is_draining() {
            return Err(ApiError::draining());
        }
        let per_ip_cap = self.config.max_connections_per_ip;
        let ip = if per_ip_cap > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(peer).or_insert(0);
            if *n >= per_ip_cap {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections_from_ip",
                    format!("at most {per_ip_cap} connections per client address"),
                )
                .retry_after(5));
            }
            *n += 1;
            Some(peer)
        } else {
            None
        };
        let open = self.connections.fetch_add(1, Ordering::Relaxed);
        if open >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            if let Some(ip) = ip {
                self.release_ip(ip);
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!(
                    "this node holds its maximum of {} connections",
                    self.config.max_connections
                ),
            )
            .retry_after(1));
        }
        let m = self.metrics.transport(transport);
        m.connections.inc();
        m.opened.inc();
        Ok(ConnPermit {
            app: self.clone(),
            transport,
            ip,
            _token: self.tracker.token(),
        })
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Refuses a publish while draining on the memory broker: its history
    /// dies with the process, so a message accepted now might reach no one
    /// and could not be resumed. Better a 503 the publisher can retry than an
    /// accepted message that is lost. (Redis keeps history: publishes go on.)
    pub fn check_publish_allowed(&self) -> Result<(), ApiError> {
        let durable = self.config.redis_url.is_some()
            || !self.config.redis_sentinel.is_empty()
            || !self.config.redis_cluster.is_empty();
        if self.is_draining() && !durable {
            return Err(ApiError::draining());
        }
        Ok(())
    }

    /// Starts the drain (SIGTERM): readiness goes 503 and every connection is
    /// told to reconnect at a random moment within the drain period.
    pub fn start_drain(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(period = ?self.config.drain_period, "draining");
            self.drain.cancel();
        }
    }

    /// Resolves when this connection should be told `reconnect`/`draining`:
    /// a uniform moment within 80 % of the drain period, so reconnects are
    /// spread and the last ones still have time to leave.
    pub fn drain_notice(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.drain.clone();
        let period = self.config.drain_period.mul_f64(0.8);
        async move {
            token.cancelled().await;
            let delay = period.mul_f64(rand::rng().random::<f64>());
            tokio::time::sleep(delay).await;
        }
    }

    /// Cancelled when the drain starts.
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// How long after the drain starts a connection is told to reconnect:
    /// uniform within 80 % of the drain period (see [`App::drain_notice`]).
    pub fn drain_delay(&self) -> Duration {
        self.config
            .drain_period
            .mul_f64(0.8 * rand::rng().random::<f64>())
    }

    /// When a connection opened now must be asked to reconnect
    /// (`max_connection_lifetime` ± 10 %), if ever.
    pub fn lifetime_deadline(&self) -> Option<Instant> {
        self.config.max_connection_lifetime.0.map(|life| {
            let jitter = rand::rng().random_range(0.9..1.1);
            Instant::now() + life.mul_f64(jitter)
        })
    }

    /// A `retry_ms` hint that spreads reconnects.
    pub fn retry_ms(&self) -> u64 {
        rand::rng().random_range(500..2500)
    }
}

/// A running node.
pub struct Server {
    pub app: Arc<App>,
    addr: SocketAddr,
    /// The accept loop.
    http: JoinHandle<()>,
    /// Stops accepting and asks every HTTP connection to finish.
    stop_http: CancellationToken,
    /// Every HTTP connection task (upgraded WebSockets leave it).
    http_conns: TaskTracker,
}
impl Server {
    /// Binds the port, builds the broker and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let auth = Auth::from_config(&config)?;
        if !auth.enabled() {
            tracing::warn!("auth is off: any client may subscribe to any channel (set --jwt-secret or --jwt-public-key)");
        }
        if !auth.publish_protected() {
            tracing::warn!("publishing is open to anyone (set --publish-key or a JWT key)");
        }
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(metrics.clone());
        let broker: Arc<dyn Broker> = if config.redis_url.is_some()
            || !config.redis_sentinel.is_empty()
            || !config.redis_cluster.is_empty()
        {
            let target = Target::from_config(
                config.redis_url.as_deref(),
                &config.redis_sentinel,
                config.redis_master_name.as_deref(),
                &config.redis_cluster,
                config.redis_ca_file.as_deref(),
            )?;
            let settings = Settings {
                history_size: config.history_size,
                history_ttl: config.history_ttl,
                publish_min_replicas: config.publish_min_replicas,
            };
            Arc::new(RedisBroker::new(target, settings, registry.clone()))
        } else {
            MemoryBroker::new(registry.clone(), config.history_size, config.history_ttl)
        };
        metrics.broker_up.set(broker.is_up() as i64);
        let hub = Arc::new(Hub {
            registry,
            broker,
            metrics: metrics.clone(),
        });

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;

        let app = Arc::new(App {
            config,
            hub,
            metrics,
            auth,
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        });
        let stop_http = CancellationToken::new();
        let http_conns = TaskTracker::new();
        let http = tokio::spawn(accept_loop(
            app.clone(),
            listener,
            router(app.clone()),
            app.config.idle_timeout,
            stop_http.clone(),
            http_conns.clone(),
        ));
        tracing::info!(%addr, "push-server listening");
        Ok(Server {
            app,
            addr,
            http,
            stop_http,
            http_conns,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drains (see [`App::start_drain`]), waits until every connection left
    /// or the drain period passed, then stops the HTTP server.
    pub async fn shutdown(self) {
        self.app.start_drain();
        self.app.tracker.close();
        let period = self.app.config.drain_period;
        if tokio::time::timeout(period, self.app.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.app.connections.load(Ordering::Relaxed),
                "drain period over; closing the rest"
            );
        }
        self.stop_http.cancel();
        let _ = self.http.await;
        // In-flight API requests finish; idle keep-alive connections close.
        self.http_conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_conns.wait()).await;
        tracing::info!("stopped");
    }
}

/// Longest wait for a request's headers (slow-loris bound); also how long an
/// idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections and serves HTTP/1.1 with upgrades. Our own loop (not
/// `axum::serve`) so that every connection gets a header-read timeout, socket
/// options, the raw SSE path, and a graceful shutdown we can wait for.
async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    router: Router,
    user_timeout: Duration,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A peer that stops acknowledging our writes for this long fails them,
        // so a client that stops reading cannot pin a connection forever.
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_nodelay(true);
        let _ = sock.set_tcp_user_timeout(Some(user_timeout));

        let router = router.clone();
        let app = app.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            // Event streams skip hyper (see transport::sse::serve_raw).
            if transport::sse::sniff(&tcp).await {
                return transport::sse::serve_raw(app, tcp, peer).await;
            }
            serve_http(router, tcp, peer, stop).await;
        });
    }
}

/// Serves one HTTP/1.1 connection with upgrades (WebSocket) until it ends or
/// `stop` asks it to finish.
async fn serve_http(
    router: Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let (body, unread) = crate::http::body::track(body, &parts.headers);
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

fn router(app: Arc<App>) -> Router {
    let batch_limit = (16 * app.config.max_message_bytes).max(1 << 20);
    let api = Router::new()
        .route(
            "/api/v1/channels/{channel}/messages",
            post(api::publish_one)
                .get(api::history)
                .layer(DefaultBodyLimit::max(app.config.max_message_bytes)),
        )
        .route("/api/v1/channels/{channel}/presence", get(api::presence))
        .route(
            "/api/v1/publish",
            post(api::publish_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/sse", get(transport::sse::handler));
    let cors = cors(&app.config.allowed_origins);
    Router::new()
        .merge(api)
        .route("/ws", get(transport::ws::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .with_state(app)
        // Outermost, so that preflight requests never reach routing.
        .layer(cors)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

use axum::http::HeaderName;

/// Whether a browser `Origin` may connect (WebSocket handshake; CORS does
/// the same for HTTP). Non-browser clients send no Origin and are allowed.
pub fn origin_allowed(origins: &[String], headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin)),
    }
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_draining() {
        return ApiError::draining().into_response();
    }
    if !app.hub.broker.is_up() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the broker is unreachable",
        )
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ready"}"#,
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.metrics.broker_up.set(app.hub.broker.is_up() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}
