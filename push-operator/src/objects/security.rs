//! Secure defaults shared by the builders (docs/operator.md, "Secure by
//! default"): which Secrets hold the auth keys and the Redis password, the
//! pod and container security contexts that Pod Security `restricted`
//! admits, default resources, and the NetworkPolicies.

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde_json::json;

use super::{meta, selector, typed, Desired, Names, Settings, REDIS_PORT, SENTINEL_PORT};
use crate::crd::PushCluster;
use crate::Result;

/// UID/GID of the push-server containers (and of the operator's own pod).
pub const SERVER_UID: i64 = 10001;
/// UID/GID of Redis and Sentinel: the `redis` user of the official image,
/// so files it wrote under the image's own entrypoint stay readable.
pub const REDIS_UID: i64 = 999;
/// Keys of the auth Secret; at least one must exist.
pub const AUTH_KEYS: [&str; 3] = ["jwtSecret", "jwtPublicKey", "publishKey"];
/// Keys the operator puts into a generated `<name>-auth` Secret.
pub const GENERATED_AUTH_KEYS: [&str; 2] = ["jwtSecret", "publishKey"];
/// Key of a generated `<name>-redis-auth` Secret.
pub const REDIS_PASSWORD_KEY: &str = "password";
/// The operator's pods, as the chart labels them (NetworkPolicy peer).
pub const OPERATOR_NAME_LABEL: &str = "push-operator";

/// Where push-server's auth keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAuth {
    /// The Secret with [`AUTH_KEYS`]; `generated` when the operator owns it.
    Secret { name: String, generated: bool },
    /// `auth.insecure: true`: no auth at all.
    Insecure,
}

/// Where the Redis password comes from; `None` is `redis.auth.insecure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisPassword {
    pub name: String,
    pub key: String,
    /// The operator owns (and created) the Secret.
    pub generated: bool,
}

/// push-server auth of `pc`: the user's Secret, the generated one, or none.
pub fn server_auth(pc: &PushCluster, names: &Names) -> ServerAuth {
    match &pc.spec.auth {
        Some(a) if a.insecure => ServerAuth::Insecure,
        Some(a) => match &a.secret_ref {
            Some(r) => ServerAuth::Secret {
                name: r.name.clone(),
                generated: false,
            },
            // validate() refuses this; fail closed if it got through.
            None => ServerAuth::Secret {
                name: names.auth_secret(),
                generated: true,
            },
        },
        None => ServerAuth::Secret {
            name: names.auth_secret(),
            generated: true,
        },
    }
}

/// The Redis password Secret of `pc`, or `None` with `redis.auth.insecure`.
pub fn redis_password(pc: &PushCluster, names: &Names) -> Option<RedisPassword> {
    let generated = || RedisPassword {
        name: names.redis_auth_secret(),
        key: REDIS_PASSWORD_KEY.into(),
        generated: true,
    };
    match &pc.spec.redis.auth {
        Some(a) if a.insecure => None,
        Some(a) => Some(match &a.secret_ref {
            Some(r) => RedisPassword {
                name: r.name.clone(),
                key: r.key.clone(),
                generated: false,
            },
            None => generated(),
        }),
        None => Some(generated()),
    }
}

/// `REDIS_PASSWORD` (read by the boot steps and written into the config
/// they generate) and `REDISCLI_AUTH` (so `redis-cli` in probes and the
/// cluster init Job authenticates without a password on its command line).
pub fn redis_password_env(pw: &Option<RedisPassword>) -> Vec<serde_json::Value> {
    let Some(pw) = pw else { return Vec::new() };
    ["REDIS_PASSWORD", "REDISCLI_AUTH"]
        .iter()
        .map(|var| {
            json!({ "name": var, "valueFrom": { "secretKeyRef": {
                "name": pw.name, "key": pw.key } } })
        })
        .collect()
}

/// Pod-level security context: non-root with a fixed UID/GID, `fsGroup` so
/// volumes are writable by it, the runtime's default seccomp profile.
pub fn pod_security(uid: i64) -> serde_json::Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// Container-level security context: no privilege escalation, no
/// capabilities, read-only root filesystem (writes go to volumes).
pub fn container_security() -> serde_json::Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

/// Default requests (and memory limit) of one container kind.
#[derive(Clone, Copy, Debug)]
pub struct DefaultResources {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub memory_limit: &'static str,
}

pub const SERVER_RESOURCES: DefaultResources = DefaultResources {
    cpu: "250m",
    memory: "256Mi",
    memory_limit: "1Gi",
};
pub const REDIS_RESOURCES: DefaultResources = DefaultResources {
    cpu: "100m",
    memory: "256Mi",
    memory_limit: "1Gi",
};
pub const SENTINEL_RESOURCES: DefaultResources = DefaultResources {
    cpu: "50m",
    memory: "32Mi",
    memory_limit: "128Mi",
};
/// Boot init containers and the cluster init Job: short-lived, small.
pub const HELPER_RESOURCES: DefaultResources = DefaultResources {
    cpu: "10m",
    memory: "32Mi",
    memory_limit: "128Mi",
};

/// The user's resources, or the defaults: a pod without requests is
/// BestEffort and evicted first.
pub fn resources(
    user: &Option<ResourceRequirements>,
    default: DefaultResources,
) -> Result<serde_json::Value> {
    Ok(match user {
        Some(r) => serde_json::to_value(r)?,
        None => json!({
            "requests": { "cpu": default.cpu, "memory": default.memory },
            "limits": { "memory": default.memory_limit },
        }),
    })
}

/// NetworkPolicies of `pc`: Redis/Sentinel reachable only from this
/// cluster's pods and the operator (default on); push-server pods
/// restricted to their ports and the configured peers (default off).
pub fn network_policies(
    pc: &PushCluster,
    names: &Names,
    settings: &Settings,
) -> Result<Vec<Desired>> {
    let np = &pc.spec.network_policy;
    let mut out = Vec::new();
    if np.redis.enabled {
        let mut ports = vec![json!({ "protocol": "TCP", "port": REDIS_PORT })];
        ports.push(json!({ "protocol": "TCP", "port": REDIS_PORT + 10000 }));
        ports.push(json!({ "protocol": "TCP", "port": SENTINEL_PORT }));
        out.push(Desired::NetworkPolicy(typed(json!({
            "metadata": meta(pc, names, names.redis_network_policy(), "redis")?,
            "spec": {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "push",
                        "app.kubernetes.io/instance": names.instance,
                    },
                    "matchExpressions": [{
                        "key": "app.kubernetes.io/component",
                        "operator": "In",
                        "values": ["redis", "sentinel"],
                    }],
                },
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [
                        // push-server, Redis, Sentinel and the cluster init
                        // Job of this PushCluster (same namespace).
                        { "podSelector": { "matchLabels": {
                            "app.kubernetes.io/name": "push",
                            "app.kubernetes.io/instance": names.instance,
                        } } },
                        // The operator probes and repairs the topology.
                        {
                            "namespaceSelector": { "matchLabels": {
                                "kubernetes.io/metadata.name": settings.operator_namespace,
                            } },
                            "podSelector": { "matchLabels": {
                                "app.kubernetes.io/name": OPERATOR_NAME_LABEL,
                            } },
                        },
                    ],
                    "ports": ports,
                }],
            },
        }))?));
    }
    if np.server.enabled {
        let mut rule = json!({
            "ports": [
                { "protocol": "TCP", "port": "http" },
                { "protocol": "TCP", "port": "metrics" },
            ],
        });
        if !np.server.from.is_empty() {
            rule["from"] = serde_json::to_value(&np.server.from)?;
        }
        out.push(Desired::NetworkPolicy(typed(json!({
            "metadata": meta(pc, names, names.server(), super::server::SERVER_COMPONENT)?,
            "spec": {
                "podSelector": { "matchLabels": selector(names, super::server::SERVER_COMPONENT) },
                "policyTypes": ["Ingress"],
                "ingress": [rule],
            },
        }))?));
    }
    Ok(out)
}

/// Random Secret value: 32 bytes from the kernel's CSPRNG, hex-encoded (no
/// quoting problem in a Redis config line or an HTTP header).
pub fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
