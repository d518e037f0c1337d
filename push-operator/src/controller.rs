//! The reconcile loop: check (or generate) the auth and Redis password
//! Secrets, observe the Redis topology, apply the desired objects with
//! server-side apply (the master Service selecting the observed master),
//! remove obsolete ones, and write the status.
//!
//! Auth fails closed: a PushCluster whose auth Secret is missing or holds
//! none of the keys gets `Ready=False/AuthSecretMissing` and a Warning
//! Event, and its push-server Deployment is not applied (an existing one
//! stays as it is, never replaced by one without auth).
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
    core::v1::{ConfigMap, Secret, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{PushCluster, PushClusterStatus, RedisMode, RedisStatus};
use crate::metrics::Metrics;
use crate::objects::security::{self, RedisPassword, ServerAuth, AUTH_KEYS};
use crate::objects::{self, redis as redis_objects, Desired, Names, Settings, FIELD_MANAGER};
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
    /// Whether the Prometheus Operator's API is served (`run` discovers it).
    pub monitoring_api: Arc<objects::monitoring::MonitoringApi>,
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
            monitoring_api: Arc::default(),
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
        Desired::NetworkPolicy(_) => ApiResource::erase::<NetworkPolicy>(&()),
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

/// Condition reasons of a missing or empty auth / Redis password Secret.
pub const AUTH_SECRET_MISSING: &str = "AuthSecretMissing";
pub const REDIS_AUTH_SECRET_MISSING: &str = "RedisAuthSecretMissing";

/// A Secret problem that keeps the push-server Deployment from rolling out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretProblem {
    pub reason: &'static str,
    pub message: String,
}

/// What the Secrets gave: the Redis password for the operator's own probes
/// and the first problem found, if any.
#[derive(Clone, Debug, Default)]
struct Secrets {
    redis_password: Option<String>,
    problem: Option<SecretProblem>,
}

/// A generated Secret: owned by the PushCluster (deleted with it), labelled
/// like every operator object, created once and never rewritten, so the
/// operator never rotates a key under running clients.
fn generated_secret(
    pc: &PushCluster,
    names: &Names,
    name: String,
    keys: &[&str],
) -> Result<Secret> {
    let mut data = std::collections::BTreeMap::new();
    for key in keys {
        let v = security::random_secret()?;
        data.insert((*key).to_string(), ByteString(v.into_bytes()));
    }
    let secret = Secret {
        metadata: objects::meta(pc, names, name, "auth")?,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    Ok(secret)
}

/// Reads Secret `name`, creating it as `generated` when it is the
/// operator's own and does not exist yet.
async fn get_or_create_secret(
    api: &Api<Secret>,
    name: &str,
    generated: Option<Secret>,
) -> Result<Option<Secret>> {
    if let Some(s) = api.get_opt(name).await? {
        return Ok(Some(s));
    }
    let Some(generated) = generated else {
        return Ok(None);
    };
    match api.create(&PostParams::default(), &generated).await {
        Ok(s) => Ok(Some(s)),
        // Created in between (a second operator replica before it lost
        // the Lease): use what is there.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get_opt(name).await?),
        Err(e) => Err(e.into()),
    }
}

fn has_value(secret: &Secret, key: &str) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.0.is_empty())
}

/// The Secret `name`; when `generate` names keys, the operator's own Secret
/// with random values for them, created if it is missing.
async fn find_secret(
    api: &Api<Secret>,
    pc: &PushCluster,
    names: &Names,
    name: &str,
    generate: Option<&[&str]>,
) -> Result<Option<Secret>> {
    let generated = generate
        .map(|keys| generated_secret(pc, names, name.to_string(), keys))
        .transpose()?;
    get_or_create_secret(api, name, generated).await
}

/// Checks the auth Secret and reads the Redis password, generating the
/// operator's own Secrets when `spec.auth` / `spec.redis.auth` are unset.
async fn secrets(ctx: &Context, pc: &PushCluster, names: &Names) -> Result<Secrets> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut out = Secrets::default();
    if let ServerAuth::Secret { name, generated } = security::server_auth(pc, names) {
        let keys: &[&str] = &security::GENERATED_AUTH_KEYS;
        let found = find_secret(&api, pc, names, &name, generated.then_some(keys)).await?;
        let ok = found
            .as_ref()
            .is_some_and(|s| AUTH_KEYS.iter().any(|k| has_value(s, k)));
        if !ok {
            let why = if found.is_some() {
                "has none of the keys"
            } else {
                "does not exist"
            };
            out.problem = Some(SecretProblem {
                reason: AUTH_SECRET_MISSING,
                message: format!(
                    "auth Secret {name:?} {why} ({}); push-server is not rolled out without auth \
                     (set spec.auth.insecure: true to run without)",
                    AUTH_KEYS.join(", ")
                ),
            });
        }
    }
    if let Some(RedisPassword {
        name,
        key,
        generated,
    }) = security::redis_password(pc, names)
    {
        let keys: &[&str] = &[security::REDIS_PASSWORD_KEY];
        let found = find_secret(&api, pc, names, &name, generated.then_some(keys)).await?;
        let password = found
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(&key).cloned())
            .and_then(|v| String::from_utf8(v.0).ok())
            .filter(|p| !p.is_empty());
        match password {
            Some(p) => out.redis_password = Some(p),
            None if out.problem.is_none() => {
                out.problem = Some(SecretProblem {
                    reason: REDIS_AUTH_SECRET_MISSING,
                    message: format!(
                        "Redis password Secret {name:?} has no non-empty key {key:?}; \
                         push-server is not rolled out (set spec.redis.auth.insecure: true \
                         to run Redis without a password)"
                    ),
                });
            }
            None => {}
        }
    }
    Ok(out)
}

/// Secret names `pc` depends on (for the Secret watch).
pub fn referenced_secrets(pc: &PushCluster) -> Vec<String> {
    let Ok(names) = Names::new(pc, &Settings::default()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let ServerAuth::Secret { name, .. } = security::server_auth(pc, &names) {
        out.push(name);
    }
    if let Some(pw) = security::redis_password(pc, &names) {
        out.push(pw.name);
    }
    out
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
    // Refuse a bad spec before touching any Secret.
    pc.spec.validate()?;
    let names = Names::new(pc, &ctx.settings)?;
    let ns = names.namespace.clone();
    let secrets = secrets(ctx, pc, &names).await?;

    // Observe first, so the master Service selects the master Sentinel
    // reports (by pod name; the operator never labels pods).
    let mut plan = None;
    if pc.spec.redis.mode == RedisMode::Replication {
        let mut ep = endpoints(pc, &names);
        ep.password = secrets.redis_password.clone();
        let obs = ctx.redis.observe(ep.clone()).await;
        plan = Some((ep, topology::decide(&obs)));
    }
    let master = plan.as_ref().and_then(|(_, p)| p.master);
    let mut desired = objects::desired_with_master(pc, &ctx.settings, master)?;
    if secrets.problem.is_some() {
        // Fail closed: no push-server pods without their keys.
        desired.retain(|d| !matches!(d, Desired::Deployment(_)));
    }

    let mut applied = Vec::with_capacity(desired.len());
    for d in desired {
        tracing::debug!(object = %d.id(), "apply");
        let obj = apply(&ctx.client, &ns, &d).await?;
        applied.push((d, obj));
    }
    for gone in objects::obsolete(pc, &ctx.settings)? {
        let result = match gone.kind {
            "HorizontalPodAutoscaler" => {
                Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns)
                    .delete(&gone.name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
            "NetworkPolicy" => Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &ns)
                .delete(&gone.name, &DeleteParams::default())
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                tracing::info!(kind = gone.kind, name = %gone.name, "deleted (no longer wanted)")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Ingress, HTTPRoute, PodMonitor, PrometheusRule (objects/optional.rs).
    let optional =
        objects::optional::reconcile(&ctx.client, pc, &names, ctx.monitoring_api.get()).await?;

    let r = readiness(pc, &names, &applied);
    let mut topology_note = String::new();
    if let Some((ep, plan)) = plan {
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
    st.image = Some(pc.spec.resolved_image());
    st.redis_image = Some(pc.spec.resolved_redis_image());
    let master_name = master.map(|m| redis_objects::redis_pod_name(&names, m));
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
    let problem = secrets.problem.as_ref();
    let server_ok = problem.is_none() && r.server_ready >= r.server_desired.max(1);
    let server_msg = match problem {
        Some(p) => p.message.clone(),
        None => format!(
            "{}/{} push-server pods ready",
            r.server_ready,
            r.server_desired.max(1)
        ),
    };
    let server_reason = match problem {
        Some(p) => p.reason,
        None if server_ok => "Ready",
        None => "Progressing",
    };
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
        server_reason,
        &server_msg,
        &t,
        g,
    );
    let ready = redis_ok && server_ok;
    let old_ready_reason = old
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone());
    let (ready_reason, ready_msg) = match problem {
        Some(p) => (p.reason, p.message.as_str()),
        None if ready => ("Ready", "Redis and push-server are ready"),
        None => ("Progressing", "waiting for Redis and push-server"),
    };
    let ready_changed = status::set(
        &mut st.conditions,
        READY,
        ready,
        ready_reason,
        ready_msg,
        &t,
        g,
    );
    let optional_events = objects::optional::write_status(&optional, &mut st, &t, g);
    if st != old {
        patch_status(ctx, pc, &st).await?;
    }
    if let Some(p) = problem {
        // Once per cause, not on every resync.
        if old_ready_reason.as_deref() != Some(p.reason) {
            event(ctx, pc, EventType::Warning, p.reason, p.message.clone()).await;
        }
    } else if ready_changed {
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
    for (reason, note) in optional_events {
        event(ctx, pc, EventType::Warning, &reason, note).await;
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
    // Owned objects: only those the operator labelled, so the watch caches
    // neither every ConfigMap nor every Service of the cluster.
    let owned =
        watcher::Config::default().labels(&format!("{}={FIELD_MANAGER}", objects::MANAGED_BY));
    // Known before the first reconcile; re-checked in the background.
    objects::monitoring::refresh(&client, &ctx.monitoring_api).await;
    let rediscover = tokio::spawn(objects::monitoring::refresh_forever(
        client.clone(),
        ctx.monitoring_api.clone(),
    ));
    let controller = Controller::new(
        Api::<PushCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    controller
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            owned.clone(),
        )
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<Job>::all(client.clone()), owned.clone())
        // HTTPRoute, PodMonitor and PrometheusRule are not watched: their
        // CRDs may be absent; the resync re-applies them.
        .owns(
            Api::<k8s_openapi::api::networking::v1::Ingress>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<NetworkPolicy>::all(client.clone()), owned)
        // The auth and Redis password Secrets are the user's as often as
        // ours: a Secret created or fixed after the PushCluster triggers
        // the PushClusters of its namespace that name it.
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            move |secret: Secret| {
                let ns = secret.namespace();
                let name = secret.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|pc| pc.namespace() == ns && referenced_secrets(pc).contains(&name))
                    .map(|pc| ObjectRef::from_obj(&*pc))
                    .collect::<Vec<_>>()
            },
        )
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
    rediscover.abort();
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
