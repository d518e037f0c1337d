//! PushCluster spec sections for pod/Service overrides (`spec.template`,
//! `spec.redis.template`), exposure (`spec.expose`) and monitoring
//! (`spec.monitoring`). Kept apart from `crd` so the core types stay
//! readable; `crd` holds the fields, these are their types.
//!
//! The pod fields reuse k8s-openapi's types (Toleration, Affinity, ...) so the
//! CRD's OpenAPI schema is the one Kubernetes uses for Pods. What the schema
//! cannot say (reserved variable names, a route without parent) is checked by
//! [`problems`], which `PushClusterSpec::validate` calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, Toleration, TopologySpreadConstraint,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::PushClusterSpec;

/// Prefix of push-server's own variables. The server reads `PUSH_*` over its
/// config file (flag > env > file), so a user variable of that prefix could
/// switch off `PUSH_REQUIRE_AUTH` or retarget Redis behind the operator's
/// back: refused rather than given some precedence.
pub const RESERVED_ENV_PREFIX: &str = "PUSH_";
/// Variables the operator sets in Redis and Sentinel containers.
pub const RESERVED_REDIS_ENV: &[&str] =
    &["REDIS_PASSWORD", "REDISCLI_AUTH", "POD_NAME", "POD_FQDN"];

/// Overrides for the push-server pods and their Service (as Strimzi's `template`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTemplate {
    /// Pod-level overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodTemplate>,
    /// Overrides of the push-server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerTemplate>,
    /// Overrides of the `<name>-push` Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTemplate>,
}

/// Overrides for the Redis and Sentinel pods and their Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTemplate {
    /// Pod-level overrides (Redis and Sentinel pods alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodTemplate>,
    /// Overrides of the redis and sentinel containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerTemplate>,
    /// Overrides of the Redis and Sentinel Services (annotations only: their
    /// type and selectors are what the topology needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<AnnotationsTemplate>,
}

/// Pod-level overrides, merged into the pods the operator builds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra pod labels and annotations; the operator's own keys win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Secrets for pulling private images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations, added to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity. Each part given (nodeAffinity, podAffinity,
    /// podAntiAffinity) replaces the operator's default of that part; the
    /// default pod anti-affinity stays unless podAntiAffinity is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the operator's default zone spread when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the pods run as (default: the namespace's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// Labels and annotations to add.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateMetadata {
    /// Extra labels (the operator's `app.kubernetes.io/*` labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations (the operator's own annotations win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Container-level overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ContainerTemplate {
    /// Extra environment variables, appended to the operator's. Names the
    /// operator sets itself are refused (push-server: every `PUSH_*`; Redis:
    /// `REDIS_PASSWORD`, `REDISCLI_AUTH`, `POD_NAME`, `POD_FQDN`): Ready=False,
    /// reason InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

/// Service overrides of the push Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplate {
    /// Service type; default ClusterIP.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Extra Service annotations (for example a cloud load balancer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Annotations-only Service override.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AnnotationsTemplate {
    /// Extra Service annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Service types a push Service may have (ExternalName has no pods behind it).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How clients reach the push Service from outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExposeSpec {
    /// A networking.k8s.io/v1 Ingress to the push Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExpose>,
    /// A Gateway API (gateway.networking.k8s.io/v1) HTTPRoute to the push Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteExpose>,
}

/// Ingress settings. See docs/kubernetes.md for the proxy timeouts
/// WebSocket and SSE need (they go in `annotations`, per controller).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressExpose {
    /// Create the Ingress.
    #[serde(default)]
    pub enabled: bool,
    /// IngressClass; unset uses the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Host names; none means one rule for every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefix routed to push-server.
    #[serde(default = "default_path")]
    #[schemars(pattern(r"^/"))]
    pub path: String,
    /// TLS for the hosts, with the certificate in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Annotations of the Ingress (controller-specific timeouts, cert-manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// TLS of an Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// Secret (type kubernetes.io/tls) holding the certificate for `hosts`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// HTTPRoute settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteExpose {
    /// Create the HTTPRoute.
    #[serde(default)]
    pub enabled: bool,
    /// Gateways (or listeners of them) the route attaches to; at least one
    /// when enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route matches; none means the listener's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Path prefix routed to push-server.
    #[serde(default = "default_path")]
    #[schemars(pattern(r"^/"))]
    pub path: String,
    /// `rules[].timeouts.request` of the route. `0s` (the default) disables
    /// the request timeout, which WebSocket and SSE streams need (Envoy's
    /// default of 15 s would cut every SSE stream); empty leaves the field out
    /// for implementations without the HTTPRouteRequestTimeout feature.
    #[serde(default = "default_request_timeout")]
    #[schemars(pattern(r"^$|^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub request_timeout: String,
    /// Annotations of the HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Default for HttpRouteExpose {
    fn default() -> Self {
        HttpRouteExpose {
            enabled: false,
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
            path: default_path(),
            request_timeout: default_request_timeout(),
            annotations: None,
        }
    }
}

/// A Gateway API `ParentReference` (gateway.networking.k8s.io/v1).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group of the parent; default gateway.networking.k8s.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent; default Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the parent; default the PushCluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Listener of the Gateway to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port of the Gateway listener to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

fn default_path() -> String {
    "/".into()
}
fn default_request_timeout() -> String {
    "0s".into()
}

/// Prometheus Operator objects (monitoring.coreos.com/v1).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A PodMonitor scraping the push-server pods' `metrics` port.
    #[serde(default)]
    pub pod_monitor: PodMonitorSettings,
    /// A PrometheusRule with push-server alerts (runbook: docs/operator.md).
    #[serde(default)]
    pub prometheus_rule: PrometheusRuleSettings,
}

/// PodMonitor settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSettings {
    /// true: create it (a missing Prometheus Operator is reported in the
    /// MonitoringReady condition); false: never; unset: create it when the
    /// monitoring.coreos.com/v1 API is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Scrape interval; unset uses Prometheus' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"))]
    pub interval: Option<String>,
    /// Labels of the PodMonitor, for a Prometheus' `podMonitorSelector`
    /// (kube-prometheus-stack selects `release: <its release>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// PrometheusRule settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRuleSettings {
    /// true / false / unset (= when the monitoring.coreos.com/v1 API is served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Labels of the PrometheusRule, for a Prometheus' `ruleSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn env_problems(
    path: &str,
    env: Option<&Vec<EnvVar>>,
    reserved: impl Fn(&str) -> bool,
) -> Vec<String> {
    env.into_iter()
        .flatten()
        .filter(|e| reserved(&e.name))
        .map(|e| {
            format!(
                "{path}: {:?} is set by the operator and cannot be overridden",
                e.name
            )
        })
        .collect()
}

/// What the schema cannot check in these sections; each entry names its field.
pub fn problems(spec: &PushClusterSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &spec.template {
        out.extend(env_problems(
            "spec.template.container.env",
            t.container.as_ref().and_then(|c| c.env.as_ref()),
            |n| n.starts_with(RESERVED_ENV_PREFIX),
        ));
    }
    if let Some(t) = &spec.redis.template {
        out.extend(env_problems(
            "spec.redis.template.container.env",
            t.container.as_ref().and_then(|c| c.env.as_ref()),
            |n| RESERVED_REDIS_ENV.contains(&n),
        ));
    }
    if let Some(e) = &spec.expose {
        if let Some(i) = e.ingress.as_ref().filter(|i| i.enabled) {
            if !i.path.starts_with('/') {
                out.push("spec.expose.ingress.path must start with /".into());
            }
        }
        if let Some(r) = e.http_route.as_ref().filter(|r| r.enabled) {
            if r.parent_refs.is_empty() {
                out.push(
                    "spec.expose.httpRoute.parentRefs: an enabled HTTPRoute needs at least one Gateway"
                        .into(),
                );
            }
            if !r.path.starts_with('/') {
                out.push("spec.expose.httpRoute.path must start with /".into());
            }
        }
    }
    out
}
