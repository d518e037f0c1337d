//! Admission of connections, the drain and the per-connection deadlines.
//!
//! axum's graceful shutdown does not wait for upgraded WebSocket tasks, so
//! every WebSocket and SSE connection holds a [`ConnPermit`], which carries a
//! token of the node's own `TaskTracker`: the drain waits for the tracker,
//! not for axum.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Node;
use crate::metrics::Transport;
use crate::protocol::{Error, ErrorCode};

/// A connection's admission: released (and counted down) on drop.
pub(crate) struct ConnPermit {
    node: Arc<Node>,
    transport: Transport,
    /// Counted against `max_connections_per_ip`.
    ip: Option<IpAddr>,
    _token: TaskTrackerToken,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.node.release_ip(ip);
        }
        self.node.connections.fetch_sub(1, Ordering::Relaxed);
        self.node
            .metrics
            .transport(self.transport)
            .connections
            .dec();
    }
}

impl Node {
    /// Admits a new client connection or says why not (503 when draining or
    /// full, 429 past the per-address cap, with `Retry-After`).
    pub(crate) fn admit(
        self: &Arc<Self>,
        transport: Transport,
        peer: IpAddr,
    ) -> Result<ConnPermit, Error> {
        if self.is_draining() {
            return Err(Error::draining());
        }
        let per_ip_cap = self.config.max_connections_per_ip;
        let ip = if per_ip_cap > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(peer).or_insert(0);
            if *n >= per_ip_cap {
                return Err(Error::new(
                    ErrorCode::TooManyConnectionsFromIp,
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
            return Err(Error::new(
                ErrorCode::TooManyConnections,
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
            node: self.clone(),
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

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain (SIGTERM): readiness goes 503 and every connection is
    /// told to reconnect at a random moment within the drain period.
    pub(crate) fn start_drain(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(period = ?self.config.drain_period, "draining");
            self.drain.cancel();
        }
    }

    /// Stops admitting and waits until every connection left, at most the
    /// drain period; how many were still open then.
    pub(crate) async fn wait_drained(&self) -> Option<usize> {
        self.tracker.close();
        let period = self.config.drain_period;
        match tokio::time::timeout(period, self.tracker.wait()).await {
            Ok(()) => None,
            Err(_) => Some(self.connections.load(Ordering::Relaxed)),
        }
    }

    /// Resolves when the drain starts.
    pub(crate) fn drain_started(&self) -> WaitForCancellationFutureOwned {
        self.drain.clone().cancelled_owned()
    }

    /// How long after the drain starts a connection is told to reconnect:
    /// uniform within 80 % of the drain period, so reconnects are spread and
    /// the last ones still have time to leave.
    pub(crate) fn drain_delay(&self) -> Duration {
        self.config
            .drain_period
            .mul_f64(0.8 * rand::rng().random::<f64>())
    }

    /// When a connection opened now must be asked to reconnect
    /// (`max_connection_lifetime` ± 10 %), if ever.
    pub(crate) fn lifetime_deadline(&self) -> Option<Instant> {
        self.config.max_connection_lifetime.0.map(|life| {
            let jitter = rand::rng().random_range(0.9..1.1);
            Instant::now() + life.mul_f64(jitter)
        })
    }

    /// A `retry_ms` hint that spreads reconnects.
    pub(crate) fn retry_ms(&self) -> u64 {
        rand::rng().random_range(500..2500)
    }
}
