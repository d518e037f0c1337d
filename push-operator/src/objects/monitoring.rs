//! `spec.monitoring`: a PodMonitor for the push-server pods' `metrics` port
//! and a PrometheusRule with the alerts of docs/operator.md ("Monitoring"),
//! both Prometheus Operator kinds (monitoring.coreos.com/v1).
//!
//! Unset `enabled` means "when the Prometheus Operator is there": the
//! controller discovers the monitoring.coreos.com/v1 API at start and then
//! every [`REDISCOVER`], and keeps the answer in [`MonitoringApi`], so a
//! reconcile itself makes no discovery call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::server::SERVER_COMPONENT;
use super::{meta, Names};
use crate::crd::PushCluster;
use crate::crd_ext::{PodMonitorSettings, PrometheusRuleSettings};
use crate::Result;

/// API group/version of the Prometheus Operator kinds.
pub const API_VERSION: &str = "monitoring.coreos.com/v1";
/// How often the controller re-checks whether the Prometheus Operator's
/// CRDs are served (installed after the operator, or removed).
pub const REDISCOVER: Duration = Duration::from_secs(300);
/// Port name the push-server pods serve `/metrics` on (docs/kubernetes.md).
pub const METRICS_PORT_NAME: &str = "metrics";
/// push-server's default `max_connections` (push-config `MAX_CONNECTIONS`),
/// for the near-the-limit alert when `spec.server.maxConnections` is unset.
pub fn default_max_connections() -> i64 {
    push_config::MAX_CONNECTIONS
        .default
        .and_then(|d| d.parse().ok())
        // push-config's default is a number; this only keeps the alert
        // meaningful if it ever stopped being one.
        .unwrap_or(100_000)
}
/// Share of `max_connections` at which the near-the-limit alert fires.
pub const CONNECTIONS_ALERT_PERCENT: i64 = 90;

/// What API discovery found for monitoring.coreos.com/v1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitoringCrds {
    pub pod_monitors: bool,
    pub prometheus_rules: bool,
}

/// The latest discovery answer, shared by all reconciles; `None` until the
/// first discovery succeeded (automatic objects are then neither created
/// nor deleted).
#[derive(Debug, Default)]
pub struct MonitoringApi(Mutex<Option<MonitoringCrds>>);

impl MonitoringApi {
    pub fn get(&self) -> Option<MonitoringCrds> {
        self.0.lock().ok().and_then(|g| *g)
    }
    pub fn set(&self, crds: MonitoringCrds) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(crds);
        }
    }
}

/// Asks the API server which monitoring.coreos.com/v1 resources it serves.
/// A 404 means the Prometheus Operator's CRDs are not installed.
pub async fn discover(client: &kube::Client) -> Result<MonitoringCrds> {
    match client.list_api_group_resources(API_VERSION).await {
        Ok(list) => Ok(MonitoringCrds {
            pod_monitors: list.resources.iter().any(|r| r.name == "podmonitors"),
            prometheus_rules: list.resources.iter().any(|r| r.name == "prometheusrules"),
        }),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(MonitoringCrds::default()),
        Err(e) => Err(e.into()),
    }
}

/// Discovers once and stores the answer; a failure keeps the previous one.
pub async fn refresh(client: &kube::Client, api: &MonitoringApi) {
    match discover(client).await {
        Ok(crds) => {
            if api.get() != Some(crds) {
                tracing::info!(?crds, "Prometheus Operator API discovery");
            }
            api.set(crds);
        }
        Err(e) => tracing::warn!(error = %e, "discovery of {API_VERSION} failed"),
    }
}

/// Re-discovers every [`REDISCOVER`] until the task is aborted.
pub async fn refresh_forever(client: kube::Client, api: Arc<MonitoringApi>) {
    loop {
        tokio::time::sleep(REDISCOVER).await;
        refresh(&client, &api).await;
    }
}

/// Whether an object with this `enabled` setting is wanted: explicit
/// values decide, unset follows discovery (`None` while not known).
pub fn wanted(enabled: Option<bool>, served: Option<bool>) -> Option<bool> {
    match enabled {
        Some(e) => Some(e),
        None => served,
    }
}

fn labelled_meta(
    pc: &PushCluster,
    names: &Names,
    extra: Option<&BTreeMap<String, String>>,
) -> Result<Value> {
    let mut m = meta(pc, names, names.server(), SERVER_COMPONENT)?;
    if let Some(extra) = extra {
        let labels = m.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in extra {
            // The operator's labels win: its watches select on them.
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(serde_json::to_value(m)?)
}

/// The PodMonitor: the push-server pods of this cluster, port `metrics`.
pub fn pod_monitor(pc: &PushCluster, names: &Names, s: &PodMonitorSettings) -> Result<Value> {
    let mut endpoint = json!({ "port": METRICS_PORT_NAME, "path": "/metrics" });
    if let Some(i) = &s.interval {
        endpoint["interval"] = json!(i);
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": labelled_meta(pc, names, s.labels.as_ref())?,
        "spec": {
            "selector": { "matchLabels": super::selector(names, SERVER_COMPONENT) },
            "podMetricsEndpoints": [endpoint],
        },
    }))
}

/// PromQL label matchers for this cluster's push-server pods: the namespace
/// and the Deployment's pod names (`<name>-push-<hash>-<suffix>`), the
/// `namespace`/`pod` labels Prometheus Operator scrapes attach.
pub fn series_selector(names: &Names) -> String {
    format!(
        r#"namespace="{}",pod=~"{}-[a-z0-9]+-[a-z0-9]+""#,
        names.namespace,
        names.server()
    )
}

/// One alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub name: &'static str,
    pub expr: String,
    pub for_: &'static str,
    pub severity: &'static str,
    pub summary: String,
    pub description: String,
}

/// The alerts of the PrometheusRule (runbook: docs/operator.md, "Alerts").
pub fn alerts(pc: &PushCluster, names: &Names) -> Vec<Alert> {
    let sel = series_selector(names);
    let max = pc
        .spec
        .server
        .max_connections
        .unwrap_or_else(default_max_connections);
    let threshold = max * CONNECTIONS_ALERT_PERCENT / 100;
    let cluster = format!("{}/{}", names.namespace, names.instance);
    vec![
        Alert {
            name: "PushBrokerDown",
            expr: format!("max by (namespace, pod) (push_broker_up{{{sel}}}) == 0"),
            for_: "1m",
            severity: "critical",
            summary: "push-server {{ $labels.pod }} cannot reach Redis".into(),
            description: format!(
                "push_broker_up has been 0 for 1 minute on {{{{ $labels.pod }}}} (PushCluster {cluster}): \
                 publishes are refused with 503 broker_unavailable and the pod is not ready."
            ),
        },
        Alert {
            name: "PushSlowConsumerDisconnects",
            expr: format!(
                "sum by (namespace, pod) (rate(push_slow_consumer_disconnects_total{{{sel}}}[5m])) > 0.1"
            ),
            for_: "15m",
            severity: "warning",
            summary: "push-server {{ $labels.pod }} keeps disconnecting slow clients".into(),
            description: format!(
                "{{{{ $labels.pod }}}} (PushCluster {cluster}) has closed {{{{ $value | humanize }}}} \
                 connections per second for 15 minutes because their outbound queue filled: \
                 clients too slow for the message rate, or a node too busy to write."
            ),
        },
        Alert {
            name: "PushConnectionsNearLimit",
            expr: format!("sum by (namespace, pod) (push_connections{{{sel}}}) > {threshold}"),
            for_: "5m",
            severity: "warning",
            summary: "push-server {{ $labels.pod }} is near max_connections".into(),
            description: format!(
                "{{{{ $labels.pod }}}} (PushCluster {cluster}) holds {{{{ $value }}}} connections, \
                 above {CONNECTIONS_ALERT_PERCENT}% of max_connections ({max}); beyond it new \
                 connections get 503. Raise autoscaling.maxReplicas or max_connections."
            ),
        },
        Alert {
            name: "PushPublishErrors",
            expr: format!(
                "sum by (namespace, pod) (rate(push_publish_errors_total{{{sel}}}[5m])) \
                 / (sum by (namespace, pod) (rate(push_publish_errors_total{{{sel}}}[5m])) \
                 + sum by (namespace, pod) (rate(push_messages_published_total{{{sel}}}[5m]))) > 0.05"
            ),
            for_: "10m",
            severity: "warning",
            summary: "push-server {{ $labels.pod }} refuses more than 5% of publishes".into(),
            description: format!(
                "{{{{ $value | humanizePercentage }}}} of the publishes to {{{{ $labels.pod }}}} \
                 (PushCluster {cluster}) have been refused for 10 minutes; \
                 push_publish_errors_total's code label says why (unauthorized: a backend with a \
                 wrong key; broker_unavailable: Redis; message_too_large: max_message_bytes)."
            ),
        },
        Alert {
            name: "PushMetricsAbsent",
            expr: format!("absent(push_broker_up{{{sel}}})"),
            for_: "15m",
            severity: "warning",
            summary: format!("no push-server metrics from PushCluster {cluster}"),
            description: format!(
                "Prometheus has scraped no push-server pod of PushCluster {cluster} for 15 minutes: \
                 every other Push alert is blind. Check the PodMonitor and the pods' metrics port."
            ),
        },
    ]
}

/// Where each alert's runbook section is.
pub fn runbook_url(alert: &str) -> String {
    format!(
        "{}/blob/main/docs/operator.md#{}",
        env!("CARGO_PKG_REPOSITORY"),
        alert.to_lowercase()
    )
}

/// The rule groups as Prometheus reads them (`promtool check rules` takes
/// exactly this under a top-level `groups:`).
pub fn rule_groups(pc: &PushCluster, names: &Names) -> Value {
    let rules: Vec<Value> = alerts(pc, names)
        .into_iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": { "severity": a.severity },
                "annotations": {
                    "summary": a.summary,
                    "description": a.description,
                    "runbook_url": runbook_url(a.name),
                },
            })
        })
        .collect();
    json!([{ "name": format!("push.{}.{}", names.namespace, names.instance), "rules": rules }])
}

/// The PrometheusRule with [`alerts`].
pub fn prometheus_rule(
    pc: &PushCluster,
    names: &Names,
    s: &PrometheusRuleSettings,
) -> Result<Value> {
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": labelled_meta(pc, names, s.labels.as_ref())?,
        "spec": { "groups": rule_groups(pc, names) },
    }))
}
