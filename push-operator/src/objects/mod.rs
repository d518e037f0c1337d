//! Desired objects: pure functions from a `PushCluster` to the Kubernetes
//! objects the operator applies. Nothing here talks to the API server, so
//! `render` and the unit tests see exactly what `run` would apply.

pub mod expose;
pub mod monitoring;
pub mod optional;
pub mod redis;
pub mod security;
pub mod server;
pub mod template;

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::Job,
    core::v1::{ConfigMap, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::crd::{PushCluster, RedisMode};
use crate::{Error, Result};

/// Field manager for server-side apply; also how `kubectl` shows our fields.
pub const FIELD_MANAGER: &str = "push-operator";
/// Sentinel's name for the monitored master group.
pub const MASTER_NAME: &str = "push";
/// Redis client port.
pub const REDIS_PORT: i32 = 6379;
/// Sentinel port.
pub const SENTINEL_PORT: i32 = 26379;
/// push-server HTTP port (API, WS, SSE, probes).
pub const HTTP_PORT: i32 = 8080;
/// push-server metrics port (`metrics_listen`), kept off the public port.
pub const METRICS_PORT: i32 = 9090;
/// Label every object the operator creates carries; its watches select on it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label the StatefulSet controller sets on each of its pods; the
/// `<name>-redis-master` Service selects the master pod by it, so the
/// operator never patches pods.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// Operator-wide settings that are not part of a PushCluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the operator itself; Redis and Sentinel pods run it as an
    /// init container so the same topology function decides their role.
    pub operator_image: String,
    /// DNS suffix of the cluster, for pod FQDNs that Redis announces.
    pub cluster_domain: String,
    /// Namespace the operator runs in (downward API `POD_NAMESPACE`); the
    /// Redis NetworkPolicy admits the operator's pods from there.
    pub operator_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            operator_image: format!(
                "ghcr.io/push-dev/push-operator:{}",
                env!("CARGO_PKG_VERSION")
            ),
            cluster_domain: "cluster.local".into(),
            operator_namespace: "push-system".into(),
        }
    }
}

/// One object to apply. An enum rather than `DynamicObject` keeps the
/// builders typed and lets tests match on kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    Job(Job),
    NetworkPolicy(NetworkPolicy),
}

impl Desired {
    /// `Kind/name`, for logs, events and tests.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Desired::ConfigMap(_) => "ConfigMap",
            Desired::Service(_) => "Service",
            Desired::StatefulSet(_) => "StatefulSet",
            Desired::Deployment(_) => "Deployment",
            Desired::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Desired::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Desired::Job(_) => "Job",
            Desired::NetworkPolicy(_) => "NetworkPolicy",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Desired::ConfigMap(o) => o.name_any(),
            Desired::Service(o) => o.name_any(),
            Desired::StatefulSet(o) => o.name_any(),
            Desired::Deployment(o) => o.name_any(),
            Desired::PodDisruptionBudget(o) => o.name_any(),
            Desired::HorizontalPodAutoscaler(o) => o.name_any(),
            Desired::Job(o) => o.name_any(),
            Desired::NetworkPolicy(o) => o.name_any(),
        }
    }

    /// The object as JSON with `apiVersion` and `kind` set, which is what
    /// server-side apply and `render` need.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        match self {
            Desired::ConfigMap(o) => typed_json(o),
            Desired::Service(o) => typed_json(o),
            Desired::StatefulSet(o) => typed_json(o),
            Desired::Deployment(o) => typed_json(o),
            Desired::PodDisruptionBudget(o) => typed_json(o),
            Desired::HorizontalPodAutoscaler(o) => typed_json(o),
            Desired::Job(o) => typed_json(o),
            Desired::NetworkPolicy(o) => typed_json(o),
        }
    }
}

fn typed_json<K>(o: &K) -> Result<serde_json::Value>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut v = serde_json::to_value(o)?;
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    Ok(v)
}

/// An object the operator created earlier that the current spec no longer
/// wants (HPA after autoscaling is turned off, Sentinel after a switch to
/// Cluster mode). Owner references would only remove it with the PushCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obsolete {
    pub kind: &'static str,
    pub name: String,
}

/// Names derived from the PushCluster name; one place so builders, reconcile
/// and the Redis boot step agree.
#[derive(Clone, Debug)]
pub struct Names {
    pub instance: String,
    pub namespace: String,
    pub cluster_domain: String,
}

impl Names {
    pub fn new(pc: &PushCluster, settings: &Settings) -> Result<Self> {
        let instance = pc
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        let namespace = pc
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        Ok(Names {
            instance,
            namespace,
            cluster_domain: settings.cluster_domain.clone(),
        })
    }
    pub fn redis(&self) -> String {
        format!("{}-redis", self.instance)
    }
    pub fn redis_headless(&self) -> String {
        format!("{}-redis-headless", self.instance)
    }
    pub fn redis_master(&self) -> String {
        format!("{}-redis-master", self.instance)
    }
    pub fn sentinel(&self) -> String {
        format!("{}-sentinel", self.instance)
    }
    pub fn server(&self) -> String {
        format!("{}-push", self.instance)
    }
    /// Generated auth Secret (when `spec.auth` is unset).
    pub fn auth_secret(&self) -> String {
        format!("{}-auth", self.instance)
    }
    /// Generated Redis password Secret (when `spec.redis.auth` is unset).
    pub fn redis_auth_secret(&self) -> String {
        format!("{}-redis-auth", self.instance)
    }
    /// NetworkPolicy in front of Redis and Sentinel.
    pub fn redis_network_policy(&self) -> String {
        format!("{}-redis", self.instance)
    }
    pub fn cluster_init_job(&self, shards: i32, replicas_per_shard: i32) -> String {
        format!(
            "{}-redis-cluster-init-{}x{}",
            self.instance,
            shards,
            replicas_per_shard + 1
        )
    }
    /// Stable DNS name of Redis pod `ordinal` (StatefulSet + headless Service).
    pub fn redis_pod_host(&self, ordinal: usize) -> String {
        format!(
            "{}-{}.{}.{}.svc.{}",
            self.redis(),
            ordinal,
            self.redis_headless(),
            self.namespace,
            self.cluster_domain
        )
    }
    pub fn sentinel_pod_host(&self, ordinal: usize) -> String {
        format!(
            "{}-{}.{}.{}.svc.{}",
            self.sentinel(),
            ordinal,
            self.sentinel(),
            self.namespace,
            self.cluster_domain
        )
    }
}

/// Recommended labels plus the instance, shared by every object.
pub fn labels(names: &Names, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(names, component);
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l.insert("app.kubernetes.io/part-of".into(), "push".into());
    l
}

/// The immutable subset of labels used in selectors (Deployment and
/// StatefulSet selectors cannot change after creation, so keep them minimal).
pub fn selector(names: &Names, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "push".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.instance.clone(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// Metadata for an owned object: name, namespace, labels, controller owner
/// reference (so deleting the PushCluster garbage-collects everything).
pub fn meta(pc: &PushCluster, names: &Names, name: String, component: &str) -> Result<ObjectMeta> {
    let owner: OwnerReference = pc
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names, component)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// Everything the operator applies for `pc`, in apply order: Redis first
/// (push-server readiness depends on it), the autoscaler last. The Redis
/// master is the one `status.redis.master` names (pod 0 before there is one).
pub fn desired(pc: &PushCluster, settings: &Settings) -> Result<Vec<Desired>> {
    desired_with_master(pc, settings, None)
}

/// [`desired`] with the Redis master the controller just observed; `None`
/// keeps the one in the status.
pub fn desired_with_master(
    pc: &PushCluster,
    settings: &Settings,
    master: Option<usize>,
) -> Result<Vec<Desired>> {
    pc.spec.validate()?;
    let names = Names::new(pc, settings)?;
    let master = master
        .or_else(|| redis::status_master(pc, &names))
        .unwrap_or(0);
    let mut out = security::network_policies(pc, &names, settings)?;
    match pc.spec.redis.mode {
        RedisMode::Replication => out.extend(redis::replication(pc, &names, settings, master)?),
        RedisMode::Cluster => out.extend(redis::cluster(pc, &names)?),
    }
    out.extend(server::objects(pc, &names)?);
    template::apply(pc, &mut out)?;
    Ok(out)
}

/// Objects from another configuration of the spec that must go away: the
/// HPA once autoscaling is turned off, a NetworkPolicy once it is disabled
/// (a mode switch is refused by the CRD, so Sentinel and Cluster objects
/// never need cleaning up).
pub fn obsolete(pc: &PushCluster, settings: &Settings) -> Result<Vec<Obsolete>> {
    let names = Names::new(pc, settings)?;
    let mut out = Vec::new();
    if !pc.spec.network_policy.redis.enabled {
        out.push(Obsolete {
            kind: "NetworkPolicy",
            name: names.redis_network_policy(),
        });
    }
    if !pc.spec.network_policy.server.enabled {
        out.push(Obsolete {
            kind: "NetworkPolicy",
            name: names.server(),
        });
    }
    if !pc.spec.autoscaling.enabled {
        out.push(Obsolete {
            kind: "HorizontalPodAutoscaler",
            name: names.server(),
        });
    }
    Ok(out)
}

/// Builds a typed object from JSON and refuses any field the type does not
/// know: k8s-openapi ignores unknown fields, so a typo in a builder would
/// otherwise vanish silently instead of failing a test.
pub(crate) fn typed<T>(value: serde_json::Value) -> Result<T>
where
    T: serde::de::DeserializeOwned + Serialize,
{
    let value = strip_nulls(value);
    let object: T = serde_json::from_value(value.clone())?;
    let back = strip_nulls(serde_json::to_value(&object)?);
    if let Some(path) = first_difference(&value, &back, String::new()) {
        return Err(Error::InvalidSpec(format!(
            "builder bug: {} does not keep field {path}",
            std::any::type_name::<T>(),
        )));
    }
    Ok(object)
}

/// JSON path of the first place where `a` and `b` differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, p) {
                            return Some(d);
                        }
                    }
                    None => return Some(p),
                }
            }
            // Fields the type adds on its own (apiVersion/kind of embedded
            // PVC templates) are fine; only lost input fields are bugs.
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(path),
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}
