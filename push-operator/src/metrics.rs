//! Operator metrics (Prometheus text format on `/metrics`).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;

/// Label of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `Error::metric_label()`.
    pub error: String,
}

/// Reconcile counters and timing.
#[derive(Clone)]
pub struct Metrics {
    /// Every reconcile started.
    pub reconciles: Counter,
    /// Failed reconciles by cause.
    pub failures: Family<ErrorLabels, Counter>,
    /// Wall time of a reconcile.
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        }
    }
}

impl Metrics {
    /// Registers under the `push_operator_` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("push_operator");
        sub.register("reconciles", "Reconciles started", self.reconciles.clone());
        sub.register(
            "reconcile_failures",
            "Reconciles that failed, by cause",
            self.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            self.duration.clone(),
        );
        self
    }

    /// Counts a reconcile and returns a guard that records its duration.
    pub fn start(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer {
            started: Instant::now(),
            histogram: &self.duration,
        }
    }

    pub fn failure(&self, label: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: label.to_string(),
            })
            .inc();
    }
}

/// Observes the elapsed time when dropped, on every return path.
pub struct Timer<'a> {
    started: Instant,
    histogram: &'a Histogram,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}
