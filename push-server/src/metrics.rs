//! Prometheus metrics (docs/operations.md), with prometheus-client.
//!
//! Handles for each label value are resolved once at start-up, so the hot
//! path only touches atomics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The two client transports, as the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Ws,
    Sse,
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

/// Per-transport handles.
#[derive(Debug, Clone, Default)]
pub struct TransportMetrics {
    /// Open connections (the autoscaler's metric).
    pub connections: Gauge,
    /// Connections accepted since start.
    pub opened: Counter,
    /// Messages written to clients.
    pub delivered: Counter,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ws: TransportMetrics,
    pub sse: TransportMetrics,
    /// Active subscriptions on this node (one per connection and channel).
    pub subscriptions: Gauge,
    /// Messages accepted by publish on this node.
    pub published: Counter,
    /// Publish accepted → written to the client socket, in seconds.
    pub delivery_latency: Histogram,
    /// Connections closed because their outbound queue was full.
    pub slow_consumer_disconnects: Counter,
    /// 1 while the broker is reachable.
    pub broker_up: Gauge,
    /// Acks received (subscriptions with ack:true).
    pub acks: Counter,
    /// Messages redelivered because no ack came within ack_timeout.
    pub redeliveries: Counter,
    /// First send → ack, in seconds.
    pub ack_latency: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let connections: Family<TransportLabel, Gauge> =
            registered(&mut r, "push_connections", "Open client connections");
        let opened: Family<TransportLabel, Counter> = registered(
            &mut r,
            "push_connections_opened",
            "Client connections accepted",
        );
        let subscriptions =
            registered(&mut r, "push_subscriptions", "Active channel subscriptions");
        let published = registered(
            &mut r,
            "push_messages_published",
            "Messages accepted by publish on this node",
        );
        let delivered: Family<TransportLabel, Counter> = registered(
            &mut r,
            "push_messages_delivered",
            "Messages written to clients",
        );
        let delivery_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        r.register(
            "push_delivery_latency_seconds",
            "Time from publish accepted to message written to the client",
            delivery_latency.clone(),
        );
        let slow_consumer_disconnects = registered(
            &mut r,
            "push_slow_consumer_disconnects",
            "Connections closed because they could not keep up",
        );
        let broker_up = registered(&mut r, "push_broker_up", "1 while the broker is reachable");
        let acks = registered(&mut r, "push_acks", "Acknowledgements received");
        let redeliveries = registered(
            &mut r,
            "push_redeliveries",
            "Messages redelivered for lack of an ack",
        );
        let ack_latency = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        r.register(
            "push_ack_latency_seconds",
            "Time from first send to ack",
            ack_latency.clone(),
        );
        let handles = |t| {
            let label = TransportLabel { transport: t };
            TransportMetrics {
                connections: connections.get_or_create(&label).clone(),
                opened: opened.get_or_create(&label).clone(),
                delivered: delivered.get_or_create(&label).clone(),
            }
        };
        Metrics {
            ws: handles(Transport::Ws),
            sse: handles(Transport::Sse),
            registry: r,
            subscriptions,
            published,
            delivery_latency,
            slow_consumer_disconnects,
            broker_up,
            acks,
            redeliveries,
            ack_latency,
        }
    }

    pub fn transport(&self, t: Transport) -> &TransportMetrics {
        match t {
            Transport::Ws => &self.ws,
            Transport::Sse => &self.sse,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A new metric of type `M`, registered under `name`; the handle to keep.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}
