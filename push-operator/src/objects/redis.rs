//! Redis objects: the Replication topology (StatefulSet of 1 master +
//! replicas, Sentinel StatefulSet, Services, PDBs) and the Cluster topology
//! (a Redis Cluster StatefulSet and a Job that creates the cluster).
//!
//! Which pod is master is not baked into the pod spec. Each Redis and
//! Sentinel pod starts with an init container (`push-operator redis-boot`)
//! that observes the running pods and Sentinels and asks
//! [`crate::topology::decide`] what it should be, so a restarted pod-0 never
//! comes back as a second master after a failover.

use serde_json::json;

use super::security::{
    self, container_security, pod_security, redis_password, redis_password_env, RedisPassword,
    HELPER_RESOURCES, REDIS_RESOURCES, REDIS_UID, SENTINEL_RESOURCES,
};
use super::{
    labels, meta, selector, typed, Desired, Names, Settings, MASTER_NAME, POD_NAME_LABEL,
    REDIS_PORT, SENTINEL_PORT,
};
use crate::crd::PushCluster;
use crate::Result;

/// Component label values.
pub const REDIS_COMPONENT: &str = "redis";
pub const SENTINEL_COMPONENT: &str = "sentinel";

/// `protected-mode no` only without a password: with `requirepass` set,
/// protected mode never refuses remote clients (it guards only a server
/// that has no password), so it stays at its default `yes` as a second
/// line of defence should the password ever be removed.
fn protected_mode(insecure: bool) -> &'static str {
    if insecure {
        "protected-mode no"
    } else {
        "protected-mode yes"
    }
}

/// Where the ConfigMap's redis.conf is mounted (read-only).
pub const REDIS_CONF: &str = "/etc/redis/redis.conf";
/// The config redis-server runs with, written by the boot step into the
/// pod's `boot` emptyDir: `include` of [`REDIS_CONF`], then the `replicaof`
/// line it decided and, unless Redis auth is insecure, `requirepass` /
/// `masterauth` from `REDIS_PASSWORD` (the password never sits in the
/// ConfigMap). Writable, so Sentinel's `CONFIG REWRITE` after a failover
/// lands: a redis-server restarted in place keeps the role Sentinel gave
/// it instead of the one it booted with (a promoted master restarting as a
/// replica of its old master kept Sentinel from failing over for ~25 s).
pub const REDIS_BOOT_CONF: &str = "/boot/redis.conf";

/// Replication-mode redis.conf. Persistence is on (AOF + RDB on the PVC) so
/// a restarted pod keeps its data. Included by [`REDIS_BOOT_CONF`].
pub fn replication_conf(insecure: bool) -> String {
    [
        "port 6379",
        "bind * -::*",
        protected_mode(insecure),
        "dir /data",
        "appendonly yes",
        "appendfsync everysec",
        "save 3600 1 300 100 60 10000",
        "replica-read-only yes",
        "replica-serve-stale-data yes",
        "repl-diskless-sync yes",
        "",
    ]
    .join("\n")
}

/// Cluster-mode redis.conf; nodes announce their stable pod hostname so
/// clients following MOVED redirects survive pod IP changes. With auth the
/// `auth` init container writes `requirepass`/`masterauth` to
/// `/boot/auth.conf` from `REDIS_PASSWORD`.
pub fn cluster_conf(insecure: bool) -> String {
    let mut lines = vec![
        "port 6379",
        "bind * -::*",
        protected_mode(insecure),
        "dir /data",
        "appendonly yes",
        "cluster-enabled yes",
        "cluster-config-file /data/nodes.conf",
        "cluster-node-timeout 5000",
        "cluster-preferred-endpoint-type hostname",
    ];
    if !insecure {
        lines.push("include /boot/auth.conf");
    }
    lines.push("");
    lines.join("\n")
}

/// Shell of the Cluster-mode `auth` init container: the password as a
/// quoted Redis config string (backslashes and quotes escaped), in a file
/// only the Redis user can read.
pub const CLUSTER_AUTH_SCRIPT: &str = r#"set -eu
umask 077
p=$(printf '%s' "$REDIS_PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')
printf 'requirepass "%s"\nmasterauth "%s"\n' "$p" "$p" > /boot/auth.conf
"#;

fn config_map(pc: &PushCluster, names: &Names, conf: String) -> Result<Desired> {
    Ok(Desired::ConfigMap(typed(json!({
        "metadata": meta(pc, names, names.redis(), REDIS_COMPONENT)?,
        "data": { "redis.conf": conf },
    }))?))
}

fn headless(
    pc: &PushCluster,
    names: &Names,
    name: String,
    component: &str,
    port: i32,
) -> Result<Desired> {
    // Not-ready addresses are published so pods can find each other (and the
    // boot step can find peers) before they pass readiness.
    Ok(Desired::Service(typed(json!({
        "metadata": meta(pc, names, name, component)?,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": selector(names, component),
            "ports": [{ "name": component, "port": port, "targetPort": port }],
        },
    }))?))
}

fn pdb(pc: &PushCluster, names: &Names, name: String, component: &str) -> Result<Desired> {
    Ok(Desired::PodDisruptionBudget(typed(json!({
        "metadata": meta(pc, names, name, component)?,
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector(names, component) },
        },
    }))?))
}

fn pod_env(names: &Names, pw: &Option<RedisPassword>) -> serde_json::Value {
    let mut env = vec![
        json!({ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "POD_FQDN", "value": format!(
            "$(POD_NAME).{}.{}.svc.{}", names.redis_headless(), names.namespace, names.cluster_domain) }),
    ];
    env.extend(redis_password_env(pw));
    serde_json::Value::Array(env)
}

/// `redis-cli ping` on `port`; authenticates through `REDISCLI_AUTH`.
fn ping_probe(port: i32) -> serde_json::Value {
    json!({
        "exec": { "command": ["redis-cli", "-p", port.to_string(), "ping"] },
        "periodSeconds": 5,
    })
}

/// The pod name of Redis pod `ordinal`.
pub fn redis_pod_name(names: &Names, ordinal: usize) -> String {
    format!("{}-{ordinal}", names.redis())
}

/// The master ordinal recorded in `status.redis.master`, if any.
pub fn status_master(pc: &PushCluster, names: &Names) -> Option<usize> {
    let master = pc.status.as_ref()?.redis.as_ref()?.master.as_ref()?;
    master
        .strip_prefix(&format!("{}-", names.redis()))?
        .parse()
        .ok()
}

fn data_claim(pc: &PushCluster) -> serde_json::Value {
    let storage = &pc.spec.redis.storage;
    json!({
        "metadata": { "name": "data" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage.storage_class_name,
            "resources": { "requests": { "storage": storage.size } },
        },
    })
}

fn spread(names: &Names, component: &str) -> serde_json::Value {
    json!({
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": { "matchLabels": selector(names, component) },
                },
            }],
        },
    })
}

/// Arguments shared by the Redis and Sentinel boot init containers.
fn boot_args(pc: &PushCluster, names: &Names, what: &str, out: &str) -> Vec<String> {
    vec![
        "redis-boot".into(),
        format!("--{what}"),
        "--instance".into(),
        names.instance.clone(),
        "--namespace".into(),
        names.namespace.clone(),
        "--cluster-domain".into(),
        names.cluster_domain.clone(),
        "--redis-pods".into(),
        (pc.spec.redis.replicas + 1).to_string(),
        "--sentinels".into(),
        pc.spec.redis.sentinel.replicas.to_string(),
        "--down-after-ms".into(),
        pc.spec.redis.sentinel.down_after_milliseconds.to_string(),
        "--pod".into(),
        "$(POD_NAME)".into(),
        "--out".into(),
        out.into(),
    ]
}

/// Sentinel quorum: a majority of the Sentinels.
pub fn quorum(sentinels: i32) -> i32 {
    sentinels / 2 + 1
}

/// Replication mode: master + replicas + Sentinel.
pub fn replication(
    pc: &PushCluster,
    names: &Names,
    settings: &Settings,
    master: usize,
) -> Result<Vec<Desired>> {
    let r = &pc.spec.redis;
    let image = pc.spec.resolved_redis_image();
    let pw = redis_password(pc, names);
    let helper = security::resources(&None, HELPER_RESOURCES)?;
    let redis_sts = Desired::StatefulSet(typed(json!({
        "metadata": meta(pc, names, names.redis(), REDIS_COMPONENT)?,
        "spec": {
            "serviceName": names.redis_headless(),
            "replicas": r.replicas + 1,
            // Parallel: the boot step, not start order, decides the master.
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector(names, REDIS_COMPONENT) },
            "template": {
                "metadata": { "labels": labels(names, REDIS_COMPONENT) },
                "spec": {
                    "securityContext": pod_security(REDIS_UID),
                    // Nothing in these pods talks to the Kubernetes API.
                    "automountServiceAccountToken": false,
                    "affinity": spread(names, REDIS_COMPONENT),
                    "initContainers": [{
                        "name": "boot",
                        "image": settings.operator_image,
                        "args": boot_args(pc, names, "redis", REDIS_BOOT_CONF),
                        "env": pod_env(names, &pw),
                        "securityContext": container_security(),
                        "resources": helper,
                        "volumeMounts": [
                            { "name": "boot", "mountPath": "/boot" },
                            { "name": "data", "mountPath": "/data", "readOnly": true },
                        ],
                    }],
                    "containers": [{
                        "name": "redis",
                        "image": image,
                        // Runs as the redis user through the pod's
                        // securityContext, not the image entrypoint's gosu.
                        "command": ["redis-server", REDIS_BOOT_CONF,
                            "--replica-announce-ip", "$(POD_FQDN)"],
                        "env": pod_env(names, &pw),
                        "ports": [{ "name": "redis", "containerPort": REDIS_PORT }],
                        "readinessProbe": ping_probe(REDIS_PORT),
                        "livenessProbe": {
                            "tcpSocket": { "port": REDIS_PORT },
                            "initialDelaySeconds": 15,
                            "periodSeconds": 10,
                        },
                        "securityContext": container_security(),
                        "resources": security::resources(&r.resources, REDIS_RESOURCES)?,
                        "volumeMounts": [
                            { "name": "data", "mountPath": "/data" },
                            { "name": "config", "mountPath": "/etc/redis" },
                            { "name": "boot", "mountPath": "/boot" },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": names.redis() } },
                        { "name": "boot", "emptyDir": {} },
                    ],
                },
            },
            "volumeClaimTemplates": [data_claim(pc)],
        },
    }))?);

    let mut master_selector = selector(names, REDIS_COMPONENT);
    master_selector.insert(POD_NAME_LABEL.into(), redis_pod_name(names, master));
    let master_svc = Desired::Service(typed(json!({
        "metadata": meta(pc, names, names.redis_master(), REDIS_COMPONENT)?,
        "spec": {
            "selector": master_selector,
            "ports": [{ "name": "redis", "port": REDIS_PORT, "targetPort": REDIS_PORT }],
        },
    }))?);

    let sentinel_sts = Desired::StatefulSet(typed(json!({
        "metadata": meta(pc, names, names.sentinel(), SENTINEL_COMPONENT)?,
        "spec": {
            "serviceName": names.sentinel(),
            "replicas": r.sentinel.replicas,
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector(names, SENTINEL_COMPONENT) },
            "template": {
                "metadata": { "labels": labels(names, SENTINEL_COMPONENT) },
                "spec": {
                    "securityContext": pod_security(REDIS_UID),
                    // Nothing in these pods talks to the Kubernetes API.
                    "automountServiceAccountToken": false,
                    "affinity": spread(names, SENTINEL_COMPONENT),
                    "initContainers": [{
                        "name": "boot",
                        "image": settings.operator_image,
                        "args": boot_args(pc, names, "sentinel", "/conf/sentinel.conf"),
                        "env": sentinel_env(&pw),
                        "securityContext": container_security(),
                        "resources": helper,
                        "volumeMounts": [{ "name": "conf", "mountPath": "/conf" }],
                    }],
                    "containers": [{
                        "name": "sentinel",
                        "image": image,
                        // Sentinel rewrites its own config file, hence a
                        // writable emptyDir rather than the ConfigMap.
                        "command": ["redis-sentinel", "/conf/sentinel.conf"],
                        "env": sentinel_env(&pw),
                        "ports": [{ "name": "sentinel", "containerPort": SENTINEL_PORT }],
                        "readinessProbe": ping_probe(SENTINEL_PORT),
                        "securityContext": container_security(),
                        "resources": security::resources(&r.sentinel.resources, SENTINEL_RESOURCES)?,
                        "volumeMounts": [{ "name": "conf", "mountPath": "/conf" }],
                    }],
                    "volumes": [{ "name": "conf", "emptyDir": {} }],
                },
            },
        },
    }))?);

    Ok(vec![
        config_map(pc, names, replication_conf(pw.is_none()))?,
        headless(
            pc,
            names,
            names.redis_headless(),
            REDIS_COMPONENT,
            REDIS_PORT,
        )?,
        master_svc,
        redis_sts,
        pdb(pc, names, names.redis(), REDIS_COMPONENT)?,
        headless(
            pc,
            names,
            names.sentinel(),
            SENTINEL_COMPONENT,
            SENTINEL_PORT,
        )?,
        sentinel_sts,
        pdb(pc, names, names.sentinel(), SENTINEL_COMPONENT)?,
    ])
}

fn sentinel_env(pw: &Option<RedisPassword>) -> serde_json::Value {
    let mut env = vec![json!({ "name": "POD_NAME",
        "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } })];
    env.extend(redis_password_env(pw));
    serde_json::Value::Array(env)
}

/// Pod count of a Redis Cluster.
pub fn cluster_nodes(pc: &PushCluster) -> i32 {
    let c = &pc.spec.redis.cluster;
    c.shards * (c.replicas_per_shard + 1)
}

/// Shell script of the cluster-creation Job: wait until every node answers,
/// do nothing if the cluster already exists (the Job may rerun), otherwise
/// `redis-cli --cluster create` with the nodes' current IPs.
pub fn cluster_init_script(pc: &PushCluster, names: &Names) -> String {
    let hosts: Vec<String> = (0..cluster_nodes(pc) as usize)
        .map(|i| names.redis_pod_host(i))
        .collect();
    format!(
        r#"set -eu
hosts="{hosts}"
for h in $hosts; do
  until redis-cli -h "$h" -p 6379 ping 2>/dev/null | grep -q PONG; do echo "waiting for $h"; sleep 2; done
done
first="${{hosts%% *}}"
known=$(redis-cli -h "$first" -p 6379 cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "$known" != "1" ]; then echo "cluster already formed ($known nodes known)"; exit 0; fi
addrs=""
for h in $hosts; do addrs="$addrs $(getent hosts "$h" | awk '{{print $1}}'):6379"; done
redis-cli --cluster create $addrs --cluster-replicas {replicas} --cluster-yes
"#,
        hosts = hosts.join(" "),
        replicas = pc.spec.redis.cluster.replicas_per_shard,
    )
}

/// Cluster mode: Redis Cluster StatefulSet plus the creation Job.
pub fn cluster(pc: &PushCluster, names: &Names) -> Result<Vec<Desired>> {
    let r = &pc.spec.redis;
    let image = pc.spec.resolved_redis_image();
    let pw = redis_password(pc, names);
    let helper = security::resources(&None, HELPER_RESOURCES)?;
    let mut mounts = vec![
        json!({ "name": "data", "mountPath": "/data" }),
        json!({ "name": "config", "mountPath": "/etc/redis" }),
    ];
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": names.redis() } })];
    let mut init = Vec::new();
    if pw.is_some() {
        mounts.push(json!({ "name": "boot", "mountPath": "/boot" }));
        volumes.push(json!({ "name": "boot", "emptyDir": {} }));
        init.push(json!({
            "name": "auth",
            "image": image,
            "command": ["sh", "-c", CLUSTER_AUTH_SCRIPT],
            "env": redis_password_env(&pw),
            "securityContext": container_security(),
            "resources": helper,
            "volumeMounts": [{ "name": "boot", "mountPath": "/boot" }],
        }));
    }
    let sts = Desired::StatefulSet(typed(json!({
        "metadata": meta(pc, names, names.redis(), REDIS_COMPONENT)?,
        "spec": {
            "serviceName": names.redis_headless(),
            "replicas": cluster_nodes(pc),
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector(names, REDIS_COMPONENT) },
            "template": {
                "metadata": { "labels": labels(names, REDIS_COMPONENT) },
                "spec": {
                    "securityContext": pod_security(REDIS_UID),
                    // Nothing in these pods talks to the Kubernetes API.
                    "automountServiceAccountToken": false,
                    "affinity": spread(names, REDIS_COMPONENT),
                    "initContainers": init,
                    "containers": [{
                        "name": "redis",
                        "image": image,
                        "command": ["redis-server", "/etc/redis/redis.conf",
                            "--cluster-announce-hostname", "$(POD_FQDN)"],
                        "env": pod_env(names, &pw),
                        "ports": [
                            { "name": "redis", "containerPort": REDIS_PORT },
                            { "name": "cluster-bus", "containerPort": REDIS_PORT + 10000 },
                        ],
                        "readinessProbe": ping_probe(REDIS_PORT),
                        "livenessProbe": {
                            "tcpSocket": { "port": REDIS_PORT },
                            "initialDelaySeconds": 15,
                            "periodSeconds": 10,
                        },
                        "securityContext": container_security(),
                        "resources": security::resources(&r.resources, REDIS_RESOURCES)?,
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [data_claim(pc)],
        },
    }))?);
    let job = Desired::Job(typed(json!({
        "metadata": meta(
            pc, names,
            names.cluster_init_job(r.cluster.shards, r.cluster.replicas_per_shard),
            REDIS_COMPONENT,
        )?,
        "spec": {
            "backoffLimit": 30,
            "template": {
                // name + instance: the Redis NetworkPolicy admits it.
                "metadata": { "labels": { "app.kubernetes.io/name": "push",
                                          "app.kubernetes.io/instance": names.instance,
                                          "app.kubernetes.io/component": "redis-cluster-init" } },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "securityContext": pod_security(REDIS_UID),
                    // Nothing in these pods talks to the Kubernetes API.
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "create-cluster",
                        "image": image,
                        "command": ["sh", "-c", cluster_init_script(pc, names)],
                        // REDISCLI_AUTH: redis-cli authenticates without the
                        // password on its command line.
                        "env": redis_password_env(&pw),
                        "securityContext": container_security(),
                        "resources": helper,
                    }],
                },
            },
        },
    }))?);
    Ok(vec![
        config_map(pc, names, cluster_conf(pw.is_none()))?,
        headless(
            pc,
            names,
            names.redis_headless(),
            REDIS_COMPONENT,
            REDIS_PORT,
        )?,
        sts,
        pdb(pc, names, names.redis(), REDIS_COMPONENT)?,
        job,
    ])
}

/// Sentinel addresses the push-server connects to.
pub fn sentinel_addrs(pc: &PushCluster, names: &Names) -> Vec<String> {
    (0..pc.spec.redis.sentinel.replicas as usize)
        .map(|i| format!("{}:{}", names.sentinel_pod_host(i), SENTINEL_PORT))
        .collect()
}

/// Redis Cluster seed addresses the push-server connects to.
pub fn cluster_addrs(pc: &PushCluster, names: &Names) -> Vec<String> {
    (0..cluster_nodes(pc) as usize)
        .map(|i| format!("{}:{}", names.redis_pod_host(i), REDIS_PORT))
        .collect()
}

/// The master name Sentinel monitors.
pub fn master_name() -> &'static str {
    MASTER_NAME
}
