//! Prometheus metrics (docs/operations.md), with prometheus-client.
//!
//! Handles for each label value are resolved once at start-up, so the hot
//! path only touches atomics.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// The codes of a refused publish (HTTP or WebSocket frame).
const PUBLISH_ERROR_CODES: [crate::protocol::ErrorCode; 12] = {
    use crate::protocol::ErrorCode as C;
    [
        C::InvalidChannel,
        C::InvalidJson,
        C::InvalidBody,
        C::BatchTooLarge,
        C::Unauthorized,
        C::InvalidToken,
        C::TokenExpired,
        C::Forbidden,
        C::MessageTooLarge,
        C::Draining,
        C::BrokerUnavailable,
        C::RateLimited,
    ]
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
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
    /// Refused publishes (HTTP and WebSocket) by error code; the family is
    /// only touched on the error path.
    publish_errors: Family<CodeLabel, Counter>,
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
        let publish_errors: Family<CodeLabel, Counter> = registered(
            &mut r,
            "push_publish_errors",
            "Publishes refused (HTTP and WebSocket), by error code",
        );
        // Every code a publish can be refused with starts at 0, so rate()
        // and the alert see the series before the first error.
        for code in PUBLISH_ERROR_CODES {
            publish_errors
                .get_or_create(&CodeLabel {
                    code: code.as_str(),
                })
                .inc_by(0);
        }
        let build: Family<BuildLabels, Gauge> = registered(
            &mut r,
            "push_build_info",
            "Always 1; the labels say which build runs",
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("PUSH_BUILD_COMMIT").into(),
            })
            .set(1);
        r.register_collector(Box::new(ProcessCollector));
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
            publish_errors,
        }
    }

    /// Counts one refused publish under its error code.
    pub fn publish_refused(&self, code: crate::protocol::ErrorCode) {
        self.publish_errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
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

/// The standard `process_*` metrics (as the Go and Python clients name
/// them), read from `/proc/self` at each scrape. prometheus-client has no
/// process collector, and a crate for six numbers is not worth it. On other
/// systems, or when `/proc` is unreadable, the metrics are left out.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel's USER_HZ,
/// 100 on every Linux architecture Rust targets (Prometheus' procfs library
/// makes the same assumption).
const USER_HZ: f64 = 100.0;

/// What one scrape read; `None` where the file was not there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's numbers from `/proc`.
    pub fn read() -> ProcessStats {
        let proc = std::path::Path::new("/proc");
        let read = |p: &str| std::fs::read_to_string(proc.join(p)).ok();
        let mut s = ProcessStats {
            open_fds: std::fs::read_dir(proc.join("self/fd"))
                .ok()
                .map(|d| d.count() as u64),
            max_fds: read("self/limits").and_then(|t| parse_max_open_files(&t)),
            ..ProcessStats::default()
        };
        if let Some(status) = read("self/status") {
            s.resident_memory_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024);
            s.virtual_memory_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024);
        }
        if let Some(stat) = read("self/stat") {
            let fields = stat_fields(&stat);
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (ticks(13), ticks(14)) {
                s.cpu_seconds = Some((utime + stime) as f64 / USER_HZ);
            }
            let boot = read("stat").and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            if let (Some(start), Some(boot)) = (ticks(21), boot) {
                s.start_time_seconds = Some(boot as f64 + start as f64 / USER_HZ);
            }
        }
        s
    }
}

/// The fields of `/proc/<pid>/stat` from the state on (field 3 is index 2):
/// the command name in parentheses may hold spaces, so split after its last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    // Indices as in proc(5), counted from 0: pid and comm come first.
    let mut fields = vec!["", ""];
    fields.extend(rest.split_whitespace());
    fields
}

/// `VmRSS:   1234 kB` → 1234.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        let mut gauge = |name: &str, help: &str, value: Option<f64>| {
            let Some(v) = value else { return Ok(()) };
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let int = |v: Option<u64>| v.map(|v| v as f64);
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            int(s.open_fds),
        )?;
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors",
            int(s.max_fds),
        )?;
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            int(s.resident_memory_bytes),
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            int(s.virtual_memory_bytes),
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            s.start_time_seconds,
        )?;
        if let Some(cpu) = s.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        // A command name with spaces and a parenthesis.
        let stat = "42 (push server) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 20";
        let f = stat_fields(stat);
        assert_eq!((f[2], f[13], f[14], f[21]), ("S", "250", "50", "12345"));
        let status = "Name:\tpush-server\nVmSize:\t  20480 kB\nVmRSS:\t    512 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(512));
        assert_eq!(status_kib(status, "VmSize:"), Some(20480));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(parse_max_open_files(limits), Some(1_048_576));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let s = ProcessStats::read();
        let fds = s.open_fds.expect("open fds");
        assert!(fds >= 3 && fds <= s.max_fds.expect("max fds"), "{s:?}");
        let rss = s.resident_memory_bytes.expect("rss");
        assert!(rss > 1 << 20 && rss <= s.virtual_memory_bytes.expect("vsz"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = s.start_time_seconds.expect("start");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(s.cpu_seconds.expect("cpu") >= 0.0);
    }
}
