//! push-server objects: config, Deployment, Service, PodDisruptionBudget and
//! the connection-count HorizontalPodAutoscaler.

use std::collections::BTreeMap;

use serde_json::json;

use super::security::{
    self, container_security, pod_security, redis_password, ServerAuth, SERVER_RESOURCES,
    SERVER_UID,
};
use super::{labels, meta, redis, selector, typed, Desired, Names, HTTP_PORT, METRICS_PORT};
use crate::crd::{PushCluster, RedisMode};
use crate::{Error, Result};
use push_config as pcfg;

/// Component label value of the push-server pods.
pub const SERVER_COMPONENT: &str = "server";
/// Where the config file is mounted in the push-server container.
pub const CONFIG_PATH: &str = "/etc/push/config.yaml";
/// Seconds added to the drain period for the grace period: the drain spreads
/// reconnects over `drain_period`, then the process still has to flush and exit.
pub const GRACE_MARGIN_SECS: u64 = 15;

/// push-server's YAML config. Every `spec.server` field is written under
/// the YAML key push-config gives its `crd_field` (no name retyped here);
/// durations as the user wrote them (the CRD pattern is push-config's), lists
/// as YAML lists. Redis and auth are passed as environment variables (they
/// depend on Secrets and on the Redis objects), the listeners are the
/// operator's own.
pub fn config_yaml(pc: &PushCluster) -> Result<String> {
    let mut m: BTreeMap<&str, serde_yaml::Value> = BTreeMap::new();
    m.insert(pcfg::LISTEN.key, format!("0.0.0.0:{HTTP_PORT}").into());
    // /metrics only on its own port, which the NetworkPolicy and Service
    // can treat apart from the public API.
    m.insert(
        pcfg::METRICS_LISTEN.key,
        format!("0.0.0.0:{METRICS_PORT}").into(),
    );
    let serde_json::Value::Object(fields) = serde_json::to_value(&pc.spec.server)? else {
        return Err(Error::InvalidSpec("spec.server is not an object".into()));
    };
    for (field, value) in fields {
        let setting = pcfg::by_crd_field(&field).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "spec.server.{field} is no push-server setting (push-config)"
            ))
        })?;
        m.insert(setting.key, serde_yaml::to_value(&value)?);
    }
    Ok(serde_yaml::to_string(&m)?)
}

/// Grace period: strictly longer than the drain period.
pub fn termination_grace_seconds(pc: &PushCluster) -> Result<i64> {
    let drain = pcfg::parse_duration(&pc.spec.server.drain_period).map_err(|e| {
        Error::InvalidSpec(format!(
            "spec.server.drainPeriod {:?}: {e}",
            pc.spec.server.drain_period
        ))
    })?;
    Ok((drain.as_secs_f64().ceil() as u64 + GRACE_MARGIN_SECS) as i64)
}

fn env(pc: &PushCluster, names: &Names) -> Vec<serde_json::Value> {
    let mut env = Vec::new();
    match pc.spec.redis.mode {
        RedisMode::Replication => {
            env.push(json!({ "name": pcfg::REDIS_SENTINEL.env,
                             "value": redis::sentinel_addrs(pc, names).join(",") }));
            env.push(json!({ "name": pcfg::REDIS_MASTER_NAME.env, "value": redis::master_name() }));
        }
        RedisMode::Cluster => {
            env.push(json!({ "name": pcfg::REDIS_CLUSTER.env,
                             "value": redis::cluster_addrs(pc, names).join(",") }));
        }
    }
    if let ServerAuth::Secret { name, .. } = security::server_auth(pc, names) {
        // Each key is optional (a Secret with only jwtSecret is valid), so
        // the server itself must refuse to start with none of them:
        // PUSH_REQUIRE_AUTH. The operator also checks the Secret before it
        // rolls out pods (AuthSecretMissing).
        for (var, key) in [
            (pcfg::JWT_SECRET.env, "jwtSecret"),
            (pcfg::JWT_PUBLIC_KEY.env, "jwtPublicKey"),
            (pcfg::PUBLISH_KEY.env, "publishKey"),
        ] {
            env.push(json!({
                "name": var,
                "valueFrom": { "secretKeyRef": {
                    "name": name, "key": key, "optional": true } },
            }));
        }
        env.push(json!({ "name": pcfg::REQUIRE_AUTH.env, "value": "true" }));
    }
    if let Some(pw) = redis_password(pc, names) {
        env.push(json!({
            "name": pcfg::REDIS_PASSWORD.env,
            "valueFrom": { "secretKeyRef": { "name": pw.name, "key": pw.key } },
        }));
    }
    env
}

/// push-server config, Deployment, Service, PDB and (if enabled) HPA.
pub fn objects(pc: &PushCluster, names: &Names) -> Result<Vec<Desired>> {
    let spec = &pc.spec;
    let config = config_yaml(pc)?;
    let sel = selector(names, SERVER_COMPONENT);
    let mut pod_labels = labels(names, SERVER_COMPONENT);
    pod_labels.remove("app.kubernetes.io/managed-by");

    let mut deployment = json!({
        "metadata": meta(pc, names, names.server(), SERVER_COMPONENT)?,
        "spec": {
            "selector": { "matchLabels": sel },
            "strategy": { "type": "RollingUpdate",
                          "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": 0 } },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": METRICS_PORT.to_string(),
                        "prometheus.io/path": "/metrics",
                        // A config change must roll the pods: the server reads
                        // its file once at start.
                        "push.dev/config-hash": fnv1a_hex(&config),
                    },
                },
                "spec": {
                    "securityContext": pod_security(SERVER_UID),
                    // Nothing in these pods talks to the Kubernetes API.
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": termination_grace_seconds(pc)?,
                    "affinity": { "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": { "matchLabels": sel },
                            },
                        }],
                    } },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": { "matchLabels": sel },
                    }],
                    "containers": [{
                        "name": "push-server",
                        "image": spec.resolved_image(),
                        "imagePullPolicy": spec.image_pull_policy.map(|p| p.as_str()),
                        "args": ["--config", CONFIG_PATH],
                        "env": env(pc, names),
                        "ports": [
                            { "name": "http", "containerPort": HTTP_PORT },
                            { "name": "metrics", "containerPort": METRICS_PORT },
                        ],
                        "livenessProbe": {
                            "httpGet": { "path": "/healthz", "port": "http" },
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "readinessProbe": {
                            "httpGet": { "path": "/readyz", "port": "http" },
                            "periodSeconds": 5,
                            "failureThreshold": 1,
                        },
                        "securityContext": container_security(),
                        "resources": security::resources(&spec.resources, SERVER_RESOURCES)?,
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/push", "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": names.server() } },
                        // Read-only root filesystem; a scratch dir for anything
                        // a library wants to write.
                        { "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } },
                    ],
                },
            },
        },
    });
    // With autoscaling on the HPA owns spec.replicas: leaving the field out of
    // our apply means server-side apply never resets what the HPA chose.
    if !spec.autoscaling.enabled {
        deployment["spec"]["replicas"] = json!(spec.replicas);
    }

    let mut out = vec![
        Desired::ConfigMap(typed(json!({
            "metadata": meta(pc, names, names.server(), SERVER_COMPONENT)?,
            "data": { "config.yaml": config },
        }))?),
        Desired::Deployment(typed(deployment)?),
        Desired::Service(typed(json!({
            "metadata": meta(pc, names, names.server(), SERVER_COMPONENT)?,
            "spec": {
                "selector": sel,
                "ports": [
                    { "name": "http", "port": 80, "targetPort": "http" },
                    { "name": "metrics", "port": METRICS_PORT, "targetPort": "metrics" },
                ],
            },
        }))?),
        Desired::PodDisruptionBudget(typed(json!({
            "metadata": meta(pc, names, names.server(), SERVER_COMPONENT)?,
            "spec": {
                // Evictions drain one pod at a time; each drain moves its
                // clients to the others.
                "maxUnavailable": 1,
                "selector": { "matchLabels": sel },
            },
        }))?),
    ];
    if spec.autoscaling.enabled {
        out.push(Desired::HorizontalPodAutoscaler(typed(hpa(pc, names)?)?));
    }
    Ok(out)
}

fn hpa(pc: &PushCluster, names: &Names) -> Result<serde_json::Value> {
    let a = &pc.spec.autoscaling;
    Ok(json!({
        "metadata": meta(pc, names, names.server(), SERVER_COMPONENT)?,
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": names.server() },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": { "name": "push_connections" },
                    "target": { "type": "AverageValue", "averageValue": a.target_connections_per_pod.to_string() },
                },
            }],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        { "type": "Percent", "value": 100, "periodSeconds": 60 },
                        { "type": "Pods", "value": 4, "periodSeconds": 60 },
                    ],
                },
                // Scaling down drains a pod and its clients reconnect to the
                // others, which briefly lowers then raises their counts; a
                // long window and one pod per minute avoid flapping.
                "scaleDown": {
                    "stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
                    "selectPolicy": "Min",
                    "policies": [{ "type": "Pods", "value": 1, "periodSeconds": 60 }],
                },
            },
        },
    }))
}

/// Stable, dependency-free hash for the config annotation.
pub fn fnv1a_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
