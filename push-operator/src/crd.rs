//! The `PushCluster` custom resource (`push.dev/v1alpha1`).
//!
//! Every field is optional for the user: serde defaults fill the Rust side and
//! the same defaults are written into the OpenAPI schema, so the API server
//! stores the filled-in object and `kubectl get -o yaml` shows what the
//! operator acts on. Bounds that the schema can express (minimum, patterns,
//! CEL rules) are enforced by the API server; [`PushClusterSpec::validate`]
//! re-checks them in the operator because a CRD installed by an older
//! operator, or `render` run on a local file, never went through the API
//! server.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Quantity syntax as the API server parses it (`resource.Quantity`).
pub const QUANTITY_PATTERN: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";
/// Durations both push-server and CEL read alike (shared from push-config).
pub const DURATION_PATTERN: &str = push_config::DURATION_PATTERN;
/// [`DURATION_PATTERN`] or `off`.
pub const OFF_DURATION_PATTERN: &str = push_config::OFF_DURATION_PATTERN;

/// Image used when `spec.image` is unset: the push-server release that
/// matches this operator build. Resolved at every reconcile, never stored
/// in the object, so an operator upgrade moves clusters that did not pin an
/// image to the matching server (shown in `status.image`).
pub fn default_image() -> String {
    format!("ghcr.io/push-dev/push-server:{}", env!("CARGO_PKG_VERSION"))
}

/// Redis image used when `spec.redis.image` is unset (shown in `status.redisImage`).
pub const DEFAULT_REDIS_IMAGE: &str = "docker.io/library/redis:7.4";

/// Desired state of a Push deployment: the push-server pods, their
/// autoscaler and the Redis broker behind them.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "push.dev",
    version = "v1alpha1",
    kind = "PushCluster",
    namespaced,
    shortname = "pushc",
    status = "PushClusterStatus",
    derive = "PartialEq",
    doc = "A Push cluster: push-server pods, Redis (master, replicas, Sentinel or Redis Cluster) and a connection-based autoscaler.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Connections target",
        type_ = "integer",
        json_path = ".spec.autoscaling.targetConnectionsPerPod"
    ),
    printcolumn(
        name = "Master",
        type_ = "string",
        json_path = ".status.redis.master",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PushClusterSpec {
    /// push-server image. Unset: the push-server release matching the
    /// operator, resolved at each reconcile and shown in `status.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Pull policy for the push-server image (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Fixed replica count, used only while autoscaling is disabled.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Horizontal scaling on live connection counts.
    #[serde(default)]
    pub autoscaling: Autoscaling,
    /// CPU/memory of the push-server container. Unset: requests of 250m CPU
    /// and 256Mi memory, a 1Gi memory limit (docs/operator.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// push-server settings, written to its config file (names as in docs/operations.md).
    #[serde(default)]
    pub server: ServerSettings,
    /// JWT and publish keys. Unset: the operator generates the Secret
    /// `<name>-auth` (random `jwtSecret` and `publishKey`) once; auth is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// NetworkPolicies the operator creates for this cluster.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// The Redis broker the push-server nodes share.
    #[serde(default)]
    pub redis: RedisSpec,
    // --- template / expose / monitoring (types in crate::crd_ext) ---
    /// Overrides merged into the push-server pods and Service (Strimzi-style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::crd_ext::ServerTemplate>,
    /// Ingress and Gateway API HTTPRoute to the push Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<crate::crd_ext::ExposeSpec>,
    /// PodMonitor and PrometheusRule (Prometheus Operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::crd_ext::MonitoringSpec>,
}

fn default_replicas() -> i32 {
    2
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// HorizontalPodAutoscaler settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// When false, `spec.replicas` is applied and no HPA exists.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lower bound for the HPA.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound for the HPA.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average `push_connections` per pod the HPA aims for.
    #[serde(default = "default_target_connections")]
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: i64,
    /// Seconds the HPA waits before scaling down, so a drain (which moves
    /// connections off a pod) is not read as a lasting drop.
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Autoscaling {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_connections_per_pod: default_target_connections(),
            scale_down_stabilization_seconds: default_scale_down_window(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    20
}
fn default_target_connections() -> i64 {
    10_000
}
fn default_scale_down_window() -> i32 {
    300
}

/// push-server settings (docs/operations.md). Unset optional fields keep the server's
/// own defaults; the ones with a default here are needed by the operator
/// itself (drain period → grace period) or shown in the docs/operations.md examples.
///
/// Field names are push-config's `crd_field`s and the CEL rules are built
/// from push-config's start-up checks ([`check_rule`]), so a spec that
/// push-server would refuse at start is refused at admission.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = check_rule(&push_config::HEARTBEAT),
    validation = check_rule(&push_config::IDLE_TIMEOUT),
    validation = check_rule(&push_config::SSE_HEARTBEAT),
    validation = check_rule(&push_config::OUTBOUND_QUEUE),
    validation = check_rule(&push_config::MAX_CONNECTIONS),
    validation = check_rule(&push_config::MAX_CHANNELS_PER_CONNECTION),
    validation = check_rule(&push_config::MAX_MESSAGE_BYTES),
    validation = check_rule(&push_config::ACK_WINDOW),
    validation = check_rule(&push_config::WRITE_DELAY)
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSettings {
    /// WebSocket ping interval.
    #[serde(default = "default_heartbeat")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub heartbeat: String,
    /// Close a connection silent for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_timeout: Option<String>,
    /// SSE comment heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub sse_heartbeat: Option<String>,
    /// Time over which clients are told to reconnect on SIGTERM.
    #[serde(default = "default_drain_period")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub drain_period: String,
    /// Retained messages per channel (0 disables history).
    #[serde(default = "default_history_size")]
    #[schemars(range(min = 0))]
    pub history_size: i64,
    /// How long history is retained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub history_ttl: Option<String>,
    /// Rebalance connections after scale-out by expiring them (± jitter); `off` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(OFF_DURATION_PATTERN))]
    pub max_connection_lifetime: Option<String>,
    /// Per-node connection cap (503 beyond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
    /// Subscriptions one connection may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_channels_per_connection: Option<i64>,
    /// Largest accepted publish body (413 beyond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<i64>,
    /// Per-connection outbound queue bound before `slow_consumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub outbound_queue: Option<i64>,
    /// Replicas that must hold a publish before it is acknowledged (`WAIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub publish_min_replicas: Option<i64>,
    /// Redelivery delay of an unacknowledged message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub ack_timeout: Option<String>,
    /// Unacknowledged messages in flight per subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ack_window: Option<i64>,
    /// Redeliveries before a message is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_redeliveries: Option<i64>,
    /// Write coalescing delay, at most 1s; `off` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(OFF_DURATION_PATTERN))]
    pub write_delay: Option<String>,
    /// Connections from one client IP per pod (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_connections_per_ip: Option<i64>,
    /// WebSocket publish frames per second per connection (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub publish_rate_limit: Option<i64>,
    /// CORS / WebSocket Origin allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// `text` or `json`; json by default because cluster logs are shipped.
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            heartbeat: default_heartbeat(),
            idle_timeout: None,
            sse_heartbeat: None,
            drain_period: default_drain_period(),
            history_size: default_history_size(),
            history_ttl: None,
            max_connection_lifetime: None,
            max_connections: None,
            max_channels_per_connection: None,
            max_message_bytes: None,
            outbound_queue: None,
            publish_min_replicas: None,
            ack_timeout: None,
            ack_window: None,
            max_redeliveries: None,
            write_delay: None,
            max_connections_per_ip: None,
            publish_rate_limit: None,
            allowed_origins: None,
            log_format: default_log_format(),
        }
    }
}

fn default_heartbeat() -> String {
    "25s".into()
}
fn default_drain_period() -> String {
    "30s".into()
}
fn default_history_size() -> i64 {
    100
}
fn default_log_format() -> LogFormat {
    LogFormat::Json
}

/// push-server log format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the auth keys live, or an explicit opt-out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.secretRef) != (has(self.insecure) && self.insecure)").message("auth: set either secretRef or insecure: true")
)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret with keys `jwtSecret`, `jwtPublicKey`, `publishKey`; at least
    /// one must exist, or the cluster is not rolled out (`AuthSecretMissing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// `true`: push-server runs without any auth (anyone may subscribe and
    /// publish). Only for trusted networks and tests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Redis password: a Secret, or an explicit opt-out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.secretRef) != (has(self.insecure) && self.insecure)").message("redis.auth: set either secretRef or insecure: true")
)]
#[serde(rename_all = "camelCase")]
pub struct RedisAuthSpec {
    /// Secret holding the Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// `true`: Redis and Sentinel run without a password (and with
    /// `protected-mode no`); anything that reaches their ports may read and
    /// write every channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// A key of a Secret in the PushCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// NetworkPolicies of a PushCluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Who may reach Redis and Sentinel.
    #[serde(default)]
    pub redis: RedisNetworkPolicy,
    /// Who may reach the push-server pods.
    #[serde(default)]
    pub server: ServerNetworkPolicy,
}

/// The Redis/Sentinel NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisNetworkPolicy {
    /// Only this cluster's push-server, Redis and Sentinel pods (and its
    /// cluster init Job) and the operator's pods may reach the Redis and
    /// Sentinel ports.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for RedisNetworkPolicy {
    fn default() -> Self {
        RedisNetworkPolicy { enabled: true }
    }
}

/// The optional push-server NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerNetworkPolicy {
    /// Restrict ingress to the push-server pods to the `http` and `metrics`
    /// ports, from `from` (all sources when `from` is empty).
    #[serde(default)]
    pub enabled: bool,
    /// Peers allowed to reach the push-server pods (NetworkPolicyPeer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
}

/// A Secret in the PushCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Redis topology.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RedisMode {
    /// One master, `replicas` replicas, Sentinel for failover.
    #[default]
    Replication,
    /// Redis Cluster (sharded pub/sub), `cluster.shards` masters.
    Cluster,
}

/// The Redis broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    // Switching topology would reuse the `<name>-redis` StatefulSet and its
    // volumes with an incompatible config; it needs a new PushCluster.
    validation = Rule::new("self.mode == oldSelf.mode").message("redis.mode cannot be changed")
)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Replication (master + replicas + Sentinel) or Cluster.
    #[serde(default)]
    pub mode: RedisMode,
    /// Redis image (also used for Sentinel); needs Redis ≥ 7. Unset:
    /// `docker.io/library/redis:7.4`, resolved at each reconcile and shown
    /// in `status.redisImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Redis password. Unset: the operator generates the Secret
    /// `<name>-redis-auth` (key `password`) once; Redis requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RedisAuthSpec>,
    /// Replicas besides the master (Replication mode).
    #[serde(default = "default_redis_replicas")]
    #[schemars(range(min = 0, max = 15))]
    pub replicas: i32,
    /// Sentinel settings (Replication mode).
    #[serde(default)]
    pub sentinel: SentinelSpec,
    /// Redis Cluster layout (Cluster mode).
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// Persistent volume per Redis pod.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU/memory for each Redis container. Unset: requests of 100m CPU and
    /// 256Mi memory, a 1Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides merged into the Redis and Sentinel pods and Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::crd_ext::RedisTemplate>,
}

impl Default for RedisSpec {
    fn default() -> Self {
        RedisSpec {
            mode: RedisMode::Replication,
            image: None,
            auth: None,
            replicas: default_redis_replicas(),
            sentinel: SentinelSpec::default(),
            cluster: ClusterSpec::default(),
            storage: StorageSpec::default(),
            resources: None,
            template: None,
        }
    }
}

fn default_redis_replicas() -> i32 {
    2
}

/// Sentinel settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSpec {
    /// Sentinel processes; odd, so a majority can agree.
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Milliseconds without a reply before a Sentinel calls the master down.
    #[serde(default = "default_down_after")]
    #[schemars(range(min = 1000))]
    pub down_after_milliseconds: i64,
    /// CPU/memory for each Sentinel container. Unset: requests of 50m CPU
    /// and 32Mi memory, a 128Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for SentinelSpec {
    fn default() -> Self {
        SentinelSpec {
            replicas: default_sentinels(),
            down_after_milliseconds: default_down_after(),
            resources: None,
        }
    }
}

fn default_sentinels() -> i32 {
    3
}
fn default_down_after() -> i64 {
    5000
}

/// Redis Cluster layout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Masters (hash-slot shards); Redis Cluster needs at least 3.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 3, max = 100))]
    pub shards: i32,
    /// Replicas per master.
    #[serde(default = "default_replicas_per_shard")]
    #[schemars(range(min = 0, max = 5))]
    pub replicas_per_shard: i32,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            shards: default_shards(),
            replicas_per_shard: default_replicas_per_shard(),
        }
    }
}

fn default_shards() -> i32 {
    3
}
fn default_replicas_per_shard() -> i32 {
    1
}

/// Persistent storage per Redis pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size as a Kubernetes quantity (`1Gi`).
    #[serde(default = "default_storage_size")]
    #[schemars(pattern(QUANTITY_PATTERN))]
    pub size: String,
    /// StorageClass; unset uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushClusterStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, RedisReady, ServerReady.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// push-server pods that exist (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// push-server pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the push-server pods (scale subresource, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Redis state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStatus>,
    /// push-server image in use (`spec.image`, or the operator's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Redis image in use (`spec.redis.image`, or the operator's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_image: Option<String>,
    /// Optional objects the operator created (`Kind/name`: Ingress,
    /// HTTPRoute, PodMonitor, PrometheusRule), so it can delete them when
    /// the spec no longer asks for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_objects: Vec<String>,
}

/// Redis part of the status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisStatus {
    /// Pod currently serving as master (Replication mode), as Sentinel sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Redis pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Sentinel pods that are ready.
    #[serde(default)]
    pub ready_sentinels: i32,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, RedisReady or ServerReady.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// CamelCase machine-readable cause.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PushClusterSpec {
    /// The push-server image to run: `spec.image` or [`default_image`].
    pub fn resolved_image(&self) -> String {
        self.image.clone().unwrap_or_else(default_image)
    }

    /// The Redis image to run: `spec.redis.image` or [`DEFAULT_REDIS_IMAGE`].
    pub fn resolved_redis_image(&self) -> String {
        self.redis
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_IMAGE.to_string())
    }

    /// Re-checks what the CRD schema enforces and what it cannot (cross-field
    /// rules), so `render` on a local file and a reconcile under an outdated
    /// CRD fail with a clear message instead of producing broken objects.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            problems.push("spec.image must not be empty when set".to_string());
        }
        if self
            .redis
            .image
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            problems.push("spec.redis.image must not be empty when set".to_string());
        }
        if let Some(a) = &self.auth {
            if a.secret_ref.is_some() == a.insecure {
                problems.push("spec.auth: set either secretRef or insecure: true".to_string());
            }
        }
        if let Some(a) = &self.redis.auth {
            if a.secret_ref.is_some() == a.insecure {
                problems
                    .push("spec.redis.auth: set either secretRef or insecure: true".to_string());
            }
        }
        if self.replicas < 1 {
            problems.push("spec.replicas must be at least 1".into());
        }
        let a = &self.autoscaling;
        if a.min_replicas < 1 {
            problems.push("spec.autoscaling.minReplicas must be at least 1".into());
        }
        if a.max_replicas < a.min_replicas {
            problems.push("spec.autoscaling.minReplicas must not exceed maxReplicas".into());
        }
        if a.target_connections_per_pod < 1 {
            problems.push("spec.autoscaling.targetConnectionsPerPod must be at least 1".into());
        }
        let s = &self.server;
        problems.extend(server_problems(s));
        if s.history_size < 0 {
            problems.push("spec.server.historySize must not be negative".into());
        }
        let r = &self.redis;
        if !(0..=15).contains(&r.replicas) {
            problems.push("spec.redis.replicas must be between 0 and 15".into());
        }
        if r.sentinel.replicas < 1 {
            problems.push("spec.redis.sentinel.replicas must be at least 1".into());
        }
        if r.mode == RedisMode::Cluster && r.cluster.shards < 3 {
            problems.push("spec.redis.cluster.shards must be at least 3".into());
        }
        if !is_quantity(&r.storage.size) {
            problems.push(format!(
                "spec.redis.storage.size: {:?} is not a quantity like 1Gi",
                r.storage.size
            ));
        }
        problems.extend(crate::crd_ext::problems(self));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSpec(problems.join("; ")))
        }
    }
}

/// The `spec.server` fields as push-config names them (camelCase) with
/// their values, unset ones left out.
fn server_fields(s: &ServerSettings) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// A field's value as text, or the server's default when unset.
fn value_or_default(
    fields: &serde_json::Map<String, serde_json::Value>,
    setting: &push_config::Setting,
) -> Option<String> {
    let field = setting.crd_field?;
    match fields.get(field) {
        Some(serde_json::Value::String(v)) => Some(v.clone()),
        Some(v) => Some(v.to_string()),
        None => setting.default.map(str::to_string),
    }
}

/// What push-server would refuse in `s` at start: the grammar of every
/// duration field and push-config's start-up checks. The CRD enforces the
/// same with patterns and [`check_rule`]s; this is for `render` and for an
/// API server that still has an older CRD.
pub fn server_problems(s: &ServerSettings) -> Vec<String> {
    use push_config::{Kind, Rule as CheckRule};
    let fields = server_fields(s);
    let mut problems = Vec::new();
    let dur = |v: &str, kind: Kind| -> Option<std::time::Duration> {
        match kind {
            Kind::OffDuration => push_config::parse_off_duration(v)
                .ok()
                .map(|d| d.unwrap_or_default()),
            _ => push_config::parse_duration(v).ok(),
        }
    };
    for (field, value) in &fields {
        let Some(setting) = push_config::by_crd_field(field) else {
            continue;
        };
        if let (Kind::Duration | Kind::OffDuration, Some(v)) = (setting.kind, value.as_str()) {
            if dur(v, setting.kind).is_none() {
                problems.push(format!(
                    "spec.server.{field}: {v:?} is not a duration like 500ms, 25s, 5m, 1h"
                ));
            }
        }
    }
    for check in push_config::CHECKS {
        let Some(field) = check.setting.crd_field else {
            continue;
        };
        let Some(v) = value_or_default(&fields, check.setting) else {
            continue;
        };
        let kind = check.setting.kind;
        let broken = match check.rule {
            CheckRule::DurationAboveZero => dur(&v, kind).is_some_and(|d| d.is_zero()),
            CheckRule::CountAtLeast(n) => v.parse::<u64>().is_ok_and(|c| c < n),
            CheckRule::LongerThan(other) => {
                let o = value_or_default(&fields, other).and_then(|o| dur(&o, other.kind));
                matches!((dur(&v, kind), o), (Some(a), Some(b)) if a <= b)
            }
            CheckRule::AtMost(max) => {
                let max = push_config::parse_duration(max).ok();
                matches!((dur(&v, kind), max), (Some(a), Some(m)) if a > m)
            }
            CheckRule::RequiresAnyOf(_) | CheckRule::DiffersFrom(_) => false,
        };
        if broken {
            problems.push(format!("spec.server.{field}: {}", check.error()));
        }
    }
    problems
}

/// `self.<field>`, or the server's default when the field is unset.
fn cel_value(setting: &push_config::Setting) -> String {
    let field = setting.crd_field.unwrap_or(setting.key);
    match setting.default {
        Some(d) if d.parse::<f64>().is_ok() => format!("(has(self.{field}) ? self.{field} : {d})"),
        Some(d) => format!("(has(self.{field}) ? self.{field} : '{d}')"),
        None => format!("self.{field}"),
    }
}

/// The CEL rule (on `spec.server`) for push-server's start-up check of
/// `setting`, with the server's own error as message. Built from
/// push-config, so the check and the rule cannot drift; a setting without
/// a CRD-expressible check gets a rule that always holds (the test
/// `every_start_up_check_has_a_cel_rule` keeps the list complete).
pub fn check_rule(setting: &push_config::Setting) -> kube::core::Rule {
    use push_config::Rule as CheckRule;
    let Some(check) = push_config::CHECKS
        .iter()
        .find(|c| c.setting.key == setting.key)
    else {
        return kube::core::Rule::new("true");
    };
    let field = setting.crd_field.unwrap_or(setting.key);
    // Unset with no default: nothing to check (the server has it off).
    let guard = if setting.default.is_none() {
        format!("!has(self.{field}) || ")
    } else {
        String::new()
    };
    let v = cel_value(setting);
    let expr = match check.rule {
        CheckRule::DurationAboveZero => format!("{guard}duration({v}) > duration('0s')"),
        CheckRule::CountAtLeast(n) => format!("{guard}{v} >= {n}"),
        CheckRule::LongerThan(other) => {
            format!("{guard}duration({v}) > duration({})", cel_value(other))
        }
        CheckRule::AtMost(max) => {
            format!("{guard}{v} == 'off' || duration({v}) <= duration('{max}')")
        }
        CheckRule::RequiresAnyOf(_) | CheckRule::DiffersFrom(_) => "true".to_string(),
    };
    kube::core::Rule::new(expr).message(kube::core::Message::Message(format!(
        "spec.server.{field}: {}",
        check.error()
    )))
}

/// Same grammar as [`QUANTITY_PATTERN`], without a regex dependency.
pub fn is_quantity(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || ((suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix[1..]
            .strip_prefix(['+', '-'])
            .unwrap_or(&suffix[1..])
            .chars()
            .all(|c| c.is_ascii_digit())
        && suffix.len() > 1)
}

/// The CRD as YAML, exactly as `push-operator crd` prints and
/// `crds/pushcluster.yaml` stores it.
pub fn crd_yaml() -> Result<String, Error> {
    let crd = PushCluster::crd();
    Ok(serde_yaml::to_string(&crd)?)
}
