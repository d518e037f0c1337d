//! The reconcile loop: apply the desired objects with server-side apply,
//! remove obsolete ones, keep the Redis master label on the real master,
//! and write the status.
//!
//! Error policy: an invalid spec becomes a `Ready=False/InvalidSpec`
//! condition and an Event, and waits for the next spec change (requeueing
//! would not fix it); any other error is written as a condition when
//! possible and retried with per-object exponential backoff.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{PushCluster, PushClusterStatus, RedisMode, RedisStatus};
use crate::metrics::Metrics;
use crate::objects::{
    self, redis as redis_objects, Desired, Names, Settings, FIELD_MANAGER, ROLE_LABEL,
};
use crate::redis_probe::{self, Endpoints};
use crate::status::{self, READY, REDIS_READY, SERVER_READY};
use crate::topology::{self, Action as RedisAction, Observation};
use crate::{Error, Result};

/// Periodic re-check: Redis topology changes (failover) are not Kubernetes
/// events, so they are noticed by polling.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Future returned by [`RedisOps`] methods.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Access to Redis from the controller; a trait so reconcile tests can
/// substitute an in-memory topology.
pub trait RedisOps: Send + Sync {
    fn observe(&self, ep: Endpoints) -> BoxFut<Observation>;
    fn execute(&self, ep: Endpoints, action: RedisAction) -> BoxFut<Result<()>>;
}

/// Real Redis over the network.
pub struct LiveRedis;

impl RedisOps for LiveRedis {
    fn observe(&self, ep: Endpoints) -> BoxFut<Observation> {
        Box::pin(async move { redis_probe::observe(&ep, None).await })
    }
    fn execute(&self, ep: Endpoints, action: RedisAction) -> BoxFut<Result<()>> {
        Box::pin(async move { redis_probe::execute(&ep, &action).await })
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// Kubernetes client (a mock in tests).
    pub client: Client,
    /// Operator-wide settings.
    pub settings: Settings,
    /// Reconcile metrics.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Redis access.
    pub redis: Arc<dyn RedisOps>,
    /// Consecutive failures per object, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        redis: Arc<dyn RedisOps>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            redis,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

fn key(pc: &PushCluster) -> String {
    format!("{}/{}", pc.namespace().unwrap_or_default(), pc.name_any())
}

/// Backoff after `n` consecutive failures: 5 s doubling, capped at 5 min.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1u64 << n.min(6)).min(300))
}

/// Endpoints of the Redis pods and Sentinels of a PushCluster.
pub fn endpoints(pc: &PushCluster, names: &Names) -> Endpoints {
    Endpoints {
        pods: (0..(pc.spec.redis.replicas + 1) as usize)
            .map(|i| format!("{}:{}", names.redis_pod_host(i), objects::REDIS_PORT))
            .collect(),
        sentinels: redis_objects::sentinel_addrs(pc, names),
        master_name: objects::MASTER_NAME.into(),
        ..Endpoints::default()
    }
}

fn api_resource(d: &Desired) -> ApiResource {
    match d {
        Desired::ConfigMap(_) => ApiResource::erase::<ConfigMap>(&()),
        Desired::Service(_) => ApiResource::erase::<Service>(&()),
        Desired::StatefulSet(_) => ApiResource::erase::<StatefulSet>(&()),
        Desired::Deployment(_) => ApiResource::erase::<Deployment>(&()),
        Desired::PodDisruptionBudget(_) => ApiResource::erase::<PodDisruptionBudget>(&()),
        Desired::HorizontalPodAutoscaler(_) => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        Desired::Job(_) => ApiResource::erase::<Job>(&()),
    }
}

/// Server-side apply of one object; returns what the API server stored
/// (including `status`, which readiness is read from).
async fn apply(client: &Client, ns: &str, d: &Desired) -> Result<DynamicObject> {
    let ar = api_resource(d);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&d.name(), &params, &Patch::Apply(&d.to_json()?))
        .await?)
}

fn int_at(obj: &DynamicObject, path: &[&str]) -> i32 {
    let mut v = &obj.data;
    for p in path {
        v = &v[*p];
    }
    v.as_i64().unwrap_or(0) as i32
}

/// Readiness read from the objects the API server returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    pub server_replicas: i32,
    pub server_ready: i32,
    pub server_desired: i32,
    pub redis_ready: i32,
    pub redis_desired: i32,
    pub sentinels_ready: i32,
    pub sentinels_desired: i32,
    pub cluster_created: bool,
}

fn readiness(pc: &PushCluster, names: &Names, applied: &[(Desired, DynamicObject)]) -> Readiness {
    let mut r = Readiness {
        server_desired: if pc.spec.autoscaling.enabled {
            pc.spec.autoscaling.min_replicas
        } else {
            pc.spec.replicas
        },
        ..Readiness::default()
    };
    for (d, obj) in applied {
        let name = d.name();
        match d {
            Desired::Deployment(_) => {
                r.server_replicas = int_at(obj, &["status", "replicas"]);
                r.server_ready = int_at(obj, &["status", "readyReplicas"]);
                let spec_replicas = int_at(obj, &["spec", "replicas"]);
                if spec_replicas > 0 {
                    // The HPA may have chosen more than the minimum.
                    r.server_desired = spec_replicas;
                }
            }
            Desired::StatefulSet(_) if name == names.redis() => {
                r.redis_ready = int_at(obj, &["status", "readyReplicas"]);
                r.redis_desired = int_at(obj, &["spec", "replicas"]);
            }
            Desired::StatefulSet(_) if name == names.sentinel() => {
                r.sentinels_ready = int_at(obj, &["status", "readyReplicas"]);
                r.sentinels_desired = int_at(obj, &["spec", "replicas"]);
            }
            Desired::Job(_) => r.cluster_created = int_at(obj, &["status", "succeeded"]) > 0,
            _ => {}
        }
    }
    r
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn event(ctx: &Context, pc: &PushCluster, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Events are best effort: losing one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&ev, &pc.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

async fn patch_status(ctx: &Context, pc: &PushCluster, status: &PushClusterStatus) -> Result<()> {
    let ns = pc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<PushCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "apiVersion": PushCluster::api_version(&()),
        "kind": PushCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Sets every condition to `False` with one reason (invalid spec, errors).
fn failed_status(pc: &PushCluster, reason: &str, message: &str) -> PushClusterStatus {
    let mut st = pc.status.clone().unwrap_or_default();
    let t = now();
    let g = pc.metadata.generation;
    st.observed_generation = g;
    status::set(&mut st.conditions, READY, false, reason, message, &t, g);
    for c in [REDIS_READY, SERVER_READY] {
        if status::get(&st.conditions, c).is_none() {
            status::set(&mut st.conditions, c, false, reason, message, &t, g);
        }
    }
    st
}

/// Moves the master label onto `master` and off every other Redis pod.
async fn label_master(ctx: &Context, ns: &str, names: &Names, master: Option<usize>) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = objects::selector(names, redis_objects::REDIS_COMPONENT)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("{}-", names.redis());
    for pod in pods.list(&ListParams::default().labels(&selector)).await? {
        let name = pod.name_any();
        let ordinal = name
            .strip_prefix(&prefix)
            .and_then(|o| o.parse::<usize>().ok());
        let want = ordinal.is_some() && ordinal == master;
        let has = pod.labels().get(ROLE_LABEL).map(String::as_str) == Some("master");
        if want != has {
            let value = if want {
                json!("master")
            } else {
                serde_json::Value::Null
            };
            let patch = json!({ "metadata": { "labels": { ROLE_LABEL: value } } });
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

/// One reconcile of one PushCluster.
pub async fn reconcile(pc: Arc<PushCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start();
    if pc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        return Ok(Action::await_change());
    }
    match reconcile_inner(&pc, &ctx).await {
        Ok(action) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&key(&pc));
            }
            Ok(action)
        }
        Err(Error::InvalidSpec(msg)) => {
            tracing::warn!(pushcluster = %key(&pc), %msg, "invalid spec");
            let was_invalid = pc
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                .is_some_and(|c| c.reason == "InvalidSpec" && c.message == msg);
            patch_status(&ctx, &pc, &failed_status(&pc, "InvalidSpec", &msg)).await?;
            if !was_invalid {
                event(&ctx, &pc, EventType::Warning, "InvalidSpec", msg).await;
            }
            ctx.metrics.failure("invalid_spec");
            // Nothing to retry until the user edits the spec.
            Ok(Action::await_change())
        }
        Err(e) => {
            // Best effort: make the failure visible on the object too.
            let _ = patch_status(
                &ctx,
                &pc,
                &failed_status(&pc, "ReconcileError", &e.to_string()),
            )
            .await;
            Err(e)
        }
    }
}

async fn reconcile_inner(pc: &PushCluster, ctx: &Context) -> Result<Action> {
    let names = Names::new(pc, &ctx.settings)?;
    let ns = names.namespace.clone();
    let desired = objects::desired(pc, &ctx.settings)?;

    let mut applied = Vec::with_capacity(desired.len());
    for d in desired {
        tracing::debug!(object = %d.id(), "apply");
        let obj = apply(&ctx.client, &ns, &d).await?;
        applied.push((d, obj));
    }
    for gone in objects::obsolete(pc, &ctx.settings)? {
        if gone.kind == "HorizontalPodAutoscaler" {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&gone.name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(name = %gone.name, "deleted HPA (autoscaling off)"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let r = readiness(pc, &names, &applied);
    let mut master = None;
    let mut topology_note = String::new();
    if pc.spec.redis.mode == RedisMode::Replication {
        let ep = endpoints(pc, &names);
        let obs = ctx.redis.observe(ep.clone()).await;
        let plan = topology::decide(&obs);
        topology_note = plan.summary.clone();
        for action in plan.actions {
            tracing::info!(?action, summary = %plan.summary, "redis topology action");
            if let Err(e) = ctx.redis.execute(ep.clone(), action.clone()).await {
                event(
                    ctx,
                    pc,
                    EventType::Warning,
                    "RedisActionFailed",
                    format!("{action:?}: {e}"),
                )
                .await;
            }
        }
        label_master(ctx, &ns, &names, plan.master).await?;
        master = plan.master;
    }

    // Status.
    let old = pc.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let t = now();
    let g = pc.metadata.generation;
    st.observed_generation = g;
    st.replicas = r.server_replicas;
    st.ready_replicas = r.server_ready;
    st.selector = Some(
        objects::selector(&names, objects::server::SERVER_COMPONENT)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    let master_name = master.map(|m| format!("{}-{m}", names.redis()));
    st.redis = Some(RedisStatus {
        master: master_name.clone(),
        ready_replicas: r.redis_ready,
        ready_sentinels: r.sentinels_ready,
    });
    let (redis_ok, redis_reason, redis_msg) = match pc.spec.redis.mode {
        RedisMode::Replication => {
            let ok = r.redis_desired > 0
                && r.redis_ready == r.redis_desired
                && r.sentinels_ready == r.sentinels_desired
                && master.is_some();
            let msg = format!(
                "{}/{} Redis pods, {}/{} Sentinels ready; {}",
                r.redis_ready,
                r.redis_desired,
                r.sentinels_ready,
                r.sentinels_desired,
                topology_note
            );
            (ok, if ok { "Ready" } else { "Progressing" }, msg)
        }
        RedisMode::Cluster => {
            let ok = r.redis_desired > 0 && r.redis_ready == r.redis_desired && r.cluster_created;
            let msg = format!(
                "{}/{} Redis Cluster nodes ready; cluster {}",
                r.redis_ready,
                r.redis_desired,
                if r.cluster_created {
                    "created"
                } else {
                    "not created yet"
                }
            );
            (ok, if ok { "Ready" } else { "Progressing" }, msg)
        }
    };
    let server_ok = r.server_ready >= r.server_desired.max(1);
    let server_msg = format!(
        "{}/{} push-server pods ready",
        r.server_ready,
        r.server_desired.max(1)
    );
    status::set(
        &mut st.conditions,
        REDIS_READY,
        redis_ok,
        redis_reason,
        &redis_msg,
        &t,
        g,
    );
    status::set(
        &mut st.conditions,
        SERVER_READY,
        server_ok,
        if server_ok { "Ready" } else { "Progressing" },
        &server_msg,
        &t,
        g,
    );
    let ready = redis_ok && server_ok;
    let ready_changed = status::set(
        &mut st.conditions,
        READY,
        ready,
        if ready { "Ready" } else { "Progressing" },
        if ready {
            "Redis and push-server are ready"
        } else {
            "waiting for Redis and push-server"
        },
        &t,
        g,
    );
    if st != old {
        patch_status(ctx, pc, &st).await?;
    }
    if ready_changed {
        let (ty, reason) = if ready {
            (EventType::Normal, "Ready")
        } else {
            (EventType::Warning, "NotReady")
        };
        event(ctx, pc, ty, reason, format!("{redis_msg}; {server_msg}")).await;
    }
    let old_master = old.redis.as_ref().and_then(|r| r.master.clone());
    if master_name.is_some() && master_name != old_master {
        event(
            ctx,
            pc,
            EventType::Normal,
            "RedisMaster",
            format!(
                "Redis master is {}",
                master_name.clone().unwrap_or_default()
            ),
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
}

/// Requeue with exponential backoff per object.
pub fn error_policy(pc: Arc<PushCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.metric_label());
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key(&pc)).or_insert(0);
            *n += 1;
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(n - 1);
    tracing::warn!(pushcluster = %key(&pc), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until a shutdown signal or `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let all = watcher::Config::default();
    Controller::new(Api::<PushCluster>::all(client.clone()), all.clone())
        .owns(Api::<Deployment>::all(client.clone()), all.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), all.clone())
        .owns(Api::<Service>::all(client.clone()), all.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), all.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), all.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            all.clone(),
        )
        .owns(Api::<Job>::all(client.clone()), all)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
