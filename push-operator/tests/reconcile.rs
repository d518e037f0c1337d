//! Reconcile against a mocked API server (the tower-test pattern of
//! kube-rs/controller-rs): one scenario per test, every expected request
//! asserted in order, and a timeout on each so a missing call fails the test
//! instead of hanging it. Redis is an in-memory stub of `RedisOps`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use kube::runtime::controller::Action;
use push_operator::controller::{self, BoxFut, Context, RedisOps};
use push_operator::crd::PushCluster;
use push_operator::metrics::Metrics;
use push_operator::objects::Settings;
use push_operator::redis_probe::Endpoints;
use push_operator::topology::{Action as RedisAction, Observation, PodState, Role, Running};
use push_operator::Error;
use serde_json::{json, Value};

mod mock_api;
use mock_api::{body_json, expect_no_more, next, not_found, respond, ApiHandle};

/// Redis as a fixed observation; records the actions the controller takes
/// and the password it probes with.
struct StubRedis {
    obs: Observation,
    executed: Mutex<Vec<RedisAction>>,
    passwords: Mutex<Vec<Option<String>>>,
}

impl RedisOps for StubRedis {
    fn observe(&self, ep: Endpoints) -> BoxFut<Observation> {
        if let Ok(mut p) = self.passwords.lock() {
            p.push(ep.password.clone());
        }
        let obs = self.obs.clone();
        Box::pin(async move { obs })
    }
    fn execute(&self, _ep: Endpoints, action: RedisAction) -> BoxFut<push_operator::Result<()>> {
        if let Ok(mut e) = self.executed.lock() {
            e.push(action);
        }
        Box::pin(async { Ok(()) })
    }
}

fn up(role: Role) -> PodState {
    PodState::Up(Running {
        role,
        offset: 100,
        keys: 10,
    })
}

/// A healthy replication set whose master (per Sentinel) is `master`; every
/// other pod replicates from it, except `stray` which claims to be master.
fn topology(master: usize, stray: Option<usize>) -> Arc<StubRedis> {
    let pods = (0..3)
        .map(|i| {
            if i == master || Some(i) == stray {
                up(Role::Master)
            } else {
                up(Role::Replica {
                    master: Some(master),
                    link_up: true,
                })
            }
        })
        .collect();
    Arc::new(StubRedis {
        obs: Observation {
            pods,
            sentinel_master: Some(master),
            failover_in_progress: false,
        },
        executed: Mutex::new(Vec::new()),
        passwords: Mutex::new(Vec::new()),
    })
}

fn context(redis: Arc<StubRedis>) -> (Arc<Context>, ApiHandle) {
    let (client, handle) = mock_api::client();
    let ctx = Context::new(client, Settings::default(), Metrics::default(), redis);
    (Arc::new(ctx), handle)
}

fn pushcluster(spec: Value) -> PushCluster {
    serde_json::from_value(json!({
        "apiVersion": "push.dev/v1alpha1",
        "kind": "PushCluster",
        "metadata": { "name": "demo", "namespace": "realtime", "uid": "uid-1", "generation": 3 },
        "spec": spec,
    }))
    .expect("valid PushCluster")
}

/// Answers one server-side apply: asserts method, path, field manager and
/// force, and returns the object as stored, with a status that makes every
/// workload fully ready.
async fn expect_apply(handle: &mut ApiHandle, path: &str) -> Value {
    let (req, send) = next(handle, path).await;
    mock_api::assert_apply(&req, path);
    let mut obj = body_json(req).await;
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(3);
    if matches!(obj["kind"].as_str(), Some("StatefulSet" | "Deployment")) {
        obj["status"] = json!({ "replicas": replicas, "readyReplicas": replicas });
    }
    respond(send, StatusCode::OK, &obj);
    obj
}

const NS: &str = "/api/v1/namespaces/realtime";
const APPS: &str = "/apis/apps/v1/namespaces/realtime";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/realtime/networkpolicies";

/// A Secret as the API server returns it (`data` base64 through ByteString).
fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let b = k8s_openapi::ByteString(v.as_bytes().to_vec());
            (k.to_string(), serde_json::to_value(b).expect("base64"))
        })
        .collect();
    json!({ "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": "realtime" }, "data": data })
}

/// Answers a GET of Secret `name` with `found` (or 404).
async fn expect_secret_get(handle: &mut ApiHandle, name: &str, found: Option<Value>) {
    let (req, send) = next(handle, &format!("GET secret {name}")).await;
    assert_eq!(req.method(), http::Method::GET, "{name}");
    assert_eq!(req.uri().path(), format!("{NS}/secrets/{name}"));
    match found {
        Some(s) => respond(send, StatusCode::OK, &s),
        None => respond(send, StatusCode::NOT_FOUND, &not_found()),
    }
}

/// Answers the creation of a generated Secret; returns its body.
async fn expect_secret_create(handle: &mut ApiHandle, name: &str) -> Value {
    let (req, send) = next(handle, &format!("create secret {name}")).await;
    assert_eq!(req.method(), http::Method::POST, "{name}");
    assert_eq!(req.uri().path(), format!("{NS}/secrets"));
    let body = body_json(req).await;
    assert_eq!(body["metadata"]["name"], name);
    respond(send, StatusCode::CREATED, &body);
    body
}

/// First reconcile of a PushCluster without `auth`/`redis.auth`: both
/// Secrets are generated. Returns (auth, redis) Secret bodies.
async fn expect_generated_secrets(handle: &mut ApiHandle) -> (Value, Value) {
    expect_secret_get(handle, "demo-auth", None).await;
    let auth = expect_secret_create(handle, "demo-auth").await;
    expect_secret_get(handle, "demo-redis-auth", None).await;
    let redis = expect_secret_create(handle, "demo-redis-auth").await;
    (auth, redis)
}

/// Later reconciles: both generated Secrets exist and are only read.
async fn expect_existing_secrets(handle: &mut ApiHandle) {
    expect_secret_get(
        handle,
        "demo-auth",
        Some(secret(
            "demo-auth",
            &[("jwtSecret", "j"), ("publishKey", "p")],
        )),
    )
    .await;
    expect_secret_get(
        handle,
        "demo-redis-auth",
        Some(secret("demo-redis-auth", &[("password", "redis-pw")])),
    )
    .await;
}

/// The DELETE of an object the spec no longer wants, answered 404.
async fn expect_delete(handle: &mut ApiHandle, path: &str) {
    let (req, send) = next(handle, &format!("DELETE {path}")).await;
    assert_eq!(req.method(), http::Method::DELETE, "{path}");
    assert_eq!(req.uri().path(), path);
    respond(send, StatusCode::NOT_FOUND, &not_found());
}

const HPA: &str = "/apis/autoscaling/v2/namespaces/realtime/horizontalpodautoscalers/demo-push";

fn replication_apply_paths() -> Vec<String> {
    vec![
        format!("{NETPOL}/demo-redis"),
        format!("{NS}/configmaps/demo-redis"),
        format!("{NS}/services/demo-redis-headless"),
        format!("{NS}/services/demo-redis-master"),
        format!("{APPS}/statefulsets/demo-redis"),
        "/apis/policy/v1/namespaces/realtime/poddisruptionbudgets/demo-redis".into(),
        format!("{NS}/services/demo-sentinel"),
        format!("{APPS}/statefulsets/demo-sentinel"),
        "/apis/policy/v1/namespaces/realtime/poddisruptionbudgets/demo-sentinel".into(),
        format!("{NS}/configmaps/demo-push"),
        format!("{APPS}/deployments/demo-push"),
        format!("{NS}/services/demo-push"),
        "/apis/policy/v1/namespaces/realtime/poddisruptionbudgets/demo-push".into(),
    ]
}

/// Whether a reconcile rolls out the push-server Deployment (it never does
/// while auth or the Redis password is missing).
#[derive(Clone, Copy, PartialEq)]
enum Rollout {
    WithServer,
    WithoutServer,
}

/// The applies of a default replication-mode PushCluster in order (with or
/// without the Deployment), its HPA, and the delete of the push pods'
/// NetworkPolicy, which is off by default.
async fn expect_rollout(handle: &mut ApiHandle, rollout: Rollout) {
    for path in replication_apply_paths() {
        if rollout == Rollout::WithServer || !path.ends_with("/deployments/demo-push") {
            expect_apply(handle, &path).await;
        }
    }
    expect_apply(handle, HPA).await;
    expect_delete(handle, &format!("{NETPOL}/demo-push")).await;
}

async fn expect_status(handle: &mut ApiHandle) -> Value {
    let (req, send) = next(handle, "status patch").await;
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/push.dev/v1alpha1/namespaces/realtime/pushclusters/demo/status"
    );
    assert!(req
        .uri()
        .query()
        .unwrap_or_default()
        .contains("fieldManager=push-operator"));
    let body = body_json(req).await;
    let mut pc = serde_json::to_value(pushcluster(json!({}))).expect("pc json");
    pc["status"] = body["status"].clone();
    respond(send, StatusCode::OK, &pc);
    body["status"].clone()
}

async fn expect_event(handle: &mut ApiHandle, reason: &str, type_: &str) -> Value {
    let (req, send) = next(handle, &format!("{reason} event")).await;
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/realtime/events"
    );
    let body = body_json(req).await;
    assert_eq!(body["reason"], reason);
    assert_eq!(body["type"], type_);
    assert_eq!(body["regarding"]["kind"], "PushCluster");
    respond(send, StatusCode::OK, &body);
    body
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} in {status}"))
}

#[tokio::test]
async fn applies_every_object_in_order_and_reports_ready() {
    let redis = topology(0, None);
    let (ctx, mut handle) = context(redis.clone());
    let pc = Arc::new(pushcluster(json!({})));
    let server = tokio::spawn(async move {
        let (auth, redis_auth) = expect_generated_secrets(&mut handle).await;
        let mut deployment = Value::Null;
        let mut master_svc = Value::Null;
        for path in replication_apply_paths() {
            let obj = expect_apply(&mut handle, &path).await;
            if obj["kind"] == "Deployment" {
                deployment = obj;
            } else if path.ends_with("/services/demo-redis-master") {
                master_svc = obj;
            }
        }
        expect_apply(&mut handle, HPA).await;
        // spec.networkPolicy.server is off by default.
        expect_delete(&mut handle, &format!("{NETPOL}/demo-push")).await;
        let status = expect_status(&mut handle).await;
        expect_event(&mut handle, "Ready", "Normal").await;
        expect_event(&mut handle, "RedisMaster", "Normal").await;
        expect_no_more(handle).await;
        (deployment, master_svc, status, auth, redis_auth)
    });
    let action = controller::reconcile(pc, ctx)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(controller::RESYNC));
    let (deployment, master_svc, status, auth, redis_auth) = server.await.expect("scenario");

    // Generated Secrets: owned, labelled, random keys.
    for (s, keys) in [
        (&auth, &["jwtSecret", "publishKey"][..]),
        (&redis_auth, &["password"][..]),
    ] {
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "PushCluster");
        assert_eq!(
            s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "push-operator"
        );
        let data = s["data"].as_object().expect("data");
        assert_eq!(data.len(), keys.len());
        for k in keys {
            let b64 = data[*k].as_str().expect("base64 value");
            assert!(b64.len() >= 40, "{k}: 32 random bytes, hex");
        }
    }
    assert_ne!(auth["data"]["jwtSecret"], auth["data"]["publishKey"]);
    // The operator probed Redis with the password it generated.
    let pw: k8s_openapi::ByteString =
        serde_json::from_value(redis_auth["data"]["password"].clone()).expect("bytes");
    assert_eq!(
        redis.passwords.lock().unwrap().clone(),
        vec![Some(String::from_utf8(pw.0).expect("utf-8"))]
    );
    // The master Service selects the master by the StatefulSet's pod label.
    assert_eq!(
        master_svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
        "demo-redis-0"
    );
    assert!(status["image"]
        .as_str()
        .unwrap_or_default()
        .starts_with("ghcr.io/push-dev/push-server:"));
    assert_eq!(status["redisImage"], "docker.io/library/redis:7.4");

    assert!(
        deployment["spec"].get("replicas").is_none(),
        "autoscaling on: the HPA owns replicas"
    );
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["redis"]["master"], "demo-redis-0");
    for c in ["Ready", "RedisReady", "ServerReady"] {
        assert_eq!(condition(&status, c)["status"], "True", "{c}: {status}");
        assert!(condition(&status, c)["lastTransitionTime"].is_string());
    }
    assert!(redis.executed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn autoscaling_off_sets_replicas_and_deletes_the_hpa() {
    let (ctx, mut handle) = context(topology(0, None));
    let pc = Arc::new(pushcluster(
        json!({ "replicas": 3, "autoscaling": { "enabled": false } }),
    ));
    let server = tokio::spawn(async move {
        expect_existing_secrets(&mut handle).await;
        let mut deployment = Value::Null;
        for path in replication_apply_paths() {
            let obj = expect_apply(&mut handle, &path).await;
            if obj["kind"] == "Deployment" {
                deployment = obj;
            }
        }
        expect_delete(&mut handle, &format!("{NETPOL}/demo-push")).await;
        expect_delete(&mut handle, HPA).await;
        expect_status(&mut handle).await;
        expect_event(&mut handle, "Ready", "Normal").await;
        expect_event(&mut handle, "RedisMaster", "Normal").await;
        expect_no_more(handle).await;
        deployment
    });
    controller::reconcile(pc, ctx)
        .await
        .expect("reconcile succeeds");
    let deployment = server.await.expect("scenario");
    assert_eq!(deployment["spec"]["replicas"], 3);
}

#[tokio::test]
async fn after_failover_the_master_service_moves_and_the_stray_master_follows() {
    // Sentinel promoted pod 2; pod 0 (master before) came back claiming to
    // be master.
    let redis = topology(2, Some(0));
    let (ctx, mut handle) = context(redis.clone());
    let mut pc = pushcluster(json!({}));
    pc.status = Some(
        serde_json::from_value(json!({
            "redis": { "master": "demo-redis-0" },
        }))
        .expect("status"),
    );
    let pc = Arc::new(pc);
    let server = tokio::spawn(async move {
        expect_existing_secrets(&mut handle).await;
        let mut master_svc = Value::Null;
        for path in replication_apply_paths() {
            let obj = expect_apply(&mut handle, &path).await;
            if path.ends_with("/services/demo-redis-master") {
                master_svc = obj;
            }
        }
        expect_apply(&mut handle, HPA).await;
        expect_delete(&mut handle, &format!("{NETPOL}/demo-push")).await;
        let status = expect_status(&mut handle).await;
        expect_event(&mut handle, "Ready", "Normal").await;
        let ev = expect_event(&mut handle, "RedisMaster", "Normal").await;
        expect_no_more(handle).await;
        (status, ev, master_svc)
    });
    controller::reconcile(pc, ctx)
        .await
        .expect("reconcile succeeds");
    let (status, ev, master_svc) = server.await.expect("scenario");
    assert_eq!(
        master_svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], "demo-redis-2",
        "no pod patch: the Service follows the master"
    );
    assert_eq!(
        redis.passwords.lock().unwrap().clone(),
        vec![Some("redis-pw".to_string())]
    );
    assert_eq!(status["redis"]["master"], "demo-redis-2");
    assert!(ev["note"]
        .as_str()
        .unwrap_or_default()
        .contains("demo-redis-2"));
    assert_eq!(
        *redis.executed.lock().unwrap(),
        vec![RedisAction::ReplicaOf { pod: 0, master: 2 }]
    );
}

#[tokio::test]
async fn invalid_spec_becomes_a_condition_not_a_retry() {
    let (ctx, mut handle) = context(topology(0, None));
    let pc = Arc::new(pushcluster(
        json!({ "autoscaling": { "minReplicas": 5, "maxReplicas": 2 } }),
    ));
    let server = tokio::spawn(async move {
        let status = expect_status(&mut handle).await;
        let ev = expect_event(&mut handle, "InvalidSpec", "Warning").await;
        expect_no_more(handle).await;
        (status, ev)
    });
    let action = controller::reconcile(pc, ctx.clone())
        .await
        .expect("a bad spec is not an error");
    assert_eq!(
        action,
        Action::await_change(),
        "only a spec edit can fix it"
    );
    let (status, ev) = server.await.expect("scenario");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"]
        .as_str()
        .unwrap_or_default()
        .contains("minReplicas"));
    assert_eq!(status["observedGeneration"], 3);
    assert!(ev["note"]
        .as_str()
        .unwrap_or_default()
        .contains("maxReplicas"));
}

#[tokio::test]
async fn api_error_is_reported_and_retried_with_backoff() {
    let (ctx, mut handle) = context(topology(0, None));
    let pc = Arc::new(pushcluster(json!({})));
    let server = tokio::spawn(async move {
        let (req, send) = next(&mut handle, "first call").await;
        assert_eq!(req.uri().path(), format!("{NS}/secrets/demo-auth"));
        respond(
            send,
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "etcd unavailable", "reason": "InternalError", "code": 500}),
        );
        let status = expect_status(&mut handle).await;
        expect_no_more(handle).await;
        status
    });
    let err = controller::reconcile(pc.clone(), ctx.clone())
        .await
        .expect_err("apply failed");
    assert!(matches!(err, Error::Kube(_)), "{err}");
    assert_eq!(err.metric_label(), "kube");
    let status = server.await.expect("scenario");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ReconcileError");
    assert!(ready["message"]
        .as_str()
        .unwrap_or_default()
        .contains("etcd unavailable"));

    assert_eq!(
        controller::error_policy(pc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        controller::error_policy(pc, &err, ctx),
        Action::requeue(Duration::from_secs(10))
    );
}

#[tokio::test]
async fn deleted_pushcluster_makes_no_calls() {
    let (ctx, handle) = context(topology(0, None));
    let mut pc = pushcluster(json!({}));
    pc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let action = controller::reconcile(Arc::new(pc), ctx)
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        Action::await_change(),
        "owner references let the GC remove the objects"
    );
    expect_no_more(handle).await;
}

#[tokio::test]
async fn steady_state_writes_no_status_and_no_events() {
    // First reconcile produces the status; the second sees it unchanged and
    // must neither patch it (transition times stay) nor publish events.
    let redis = topology(0, None);
    let (ctx, mut handle) = context(redis.clone());
    let first = tokio::spawn(async move {
        expect_existing_secrets(&mut handle).await;
        expect_rollout(&mut handle, Rollout::WithServer).await;
        let status = expect_status(&mut handle).await;
        expect_event(&mut handle, "Ready", "Normal").await;
        expect_event(&mut handle, "RedisMaster", "Normal").await;
        status
    });
    controller::reconcile(Arc::new(pushcluster(json!({}))), ctx)
        .await
        .expect("first reconcile");
    let status = first.await.expect("first scenario");

    let (ctx, mut handle) = context(redis);
    let mut pc = pushcluster(json!({}));
    pc.status = Some(serde_json::from_value(status).expect("status round-trips"));
    let second = tokio::spawn(async move {
        expect_existing_secrets(&mut handle).await;
        expect_rollout(&mut handle, Rollout::WithServer).await;
        expect_no_more(handle).await;
    });
    controller::reconcile(Arc::new(pc), ctx)
        .await
        .expect("second reconcile");
    second.await.expect("second scenario");
}

/// A `secretRef` to a Secret that is missing, then to one with none of the
/// keys: Ready=False/AuthSecretMissing, a Warning Event (once), and every
/// object but the push-server Deployment applied.
#[tokio::test]
async fn missing_auth_secret_fails_closed() {
    for found in [None, Some(secret("push-auth", &[("unrelated", "x")]))] {
        let empty = found.is_some();
        let (ctx, mut handle) = context(topology(0, None));
        let pc = Arc::new(pushcluster(
            json!({ "auth": { "secretRef": { "name": "push-auth" } } }),
        ));
        let server = tokio::spawn(async move {
            expect_secret_get(&mut handle, "push-auth", found).await;
            expect_secret_get(
                &mut handle,
                "demo-redis-auth",
                Some(secret("demo-redis-auth", &[("password", "pw")])),
            )
            .await;
            expect_rollout(&mut handle, Rollout::WithoutServer).await;
            let status = expect_status(&mut handle).await;
            let ev = expect_event(&mut handle, "AuthSecretMissing", "Warning").await;
            // Redis is managed as usual meanwhile.
            expect_event(&mut handle, "RedisMaster", "Normal").await;
            expect_no_more(handle).await;
            (status, ev)
        });
        controller::reconcile(pc, ctx)
            .await
            .expect("a missing Secret is a condition, not an error");
        let (status, ev) = server.await.expect("scenario");
        for c in ["Ready", "ServerReady"] {
            assert_eq!(condition(&status, c)["status"], "False", "{c}");
            assert_eq!(condition(&status, c)["reason"], "AuthSecretMissing", "{c}");
        }
        let note = ev["note"].as_str().unwrap_or_default();
        assert!(note.contains("push-auth"), "{note}");
        let why = if empty {
            "none of the keys"
        } else {
            "does not exist"
        };
        assert!(note.contains(why), "{note}");

        // The next resync finds it still missing: no second Event.
        let (ctx, mut handle) = context(topology(0, None));
        let mut again = pushcluster(json!({ "auth": { "secretRef": { "name": "push-auth" } } }));
        again.status = Some(serde_json::from_value(status).expect("status"));
        let server = tokio::spawn(async move {
            expect_secret_get(&mut handle, "push-auth", None).await;
            expect_secret_get(
                &mut handle,
                "demo-redis-auth",
                Some(secret("demo-redis-auth", &[("password", "pw")])),
            )
            .await;
            expect_rollout(&mut handle, Rollout::WithoutServer).await;
            if empty {
                // The message changed (missing now, empty before).
                expect_status(&mut handle).await;
            }
            expect_no_more(handle).await;
        });
        controller::reconcile(Arc::new(again), ctx)
            .await
            .expect("second reconcile");
        server.await.expect("second scenario");
    }
}

/// `auth.insecure` and `redis.auth.insecure`: no Secret is read or made, no
/// password is probed with, and the Deployment is rolled out.
#[tokio::test]
async fn insecure_reads_no_secret() {
    let redis = topology(0, None);
    let (ctx, mut handle) = context(redis.clone());
    let pc = Arc::new(pushcluster(
        json!({ "auth": { "insecure": true }, "redis": { "auth": { "insecure": true } } }),
    ));
    let server = tokio::spawn(async move {
        expect_rollout(&mut handle, Rollout::WithServer).await;
        let status = expect_status(&mut handle).await;
        expect_event(&mut handle, "Ready", "Normal").await;
        expect_event(&mut handle, "RedisMaster", "Normal").await;
        expect_no_more(handle).await;
        status
    });
    controller::reconcile(pc, ctx).await.expect("reconcile");
    let status = server.await.expect("scenario");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(redis.passwords.lock().unwrap().clone(), vec![None]);
}

#[test]
fn a_secret_event_maps_to_the_pushclusters_that_name_it() {
    let user = pushcluster(json!({ "auth": { "secretRef": { "name": "push-auth" } },
        "redis": { "auth": { "secretRef": { "name": "redis-pw", "key": "pw" } } } }));
    assert_eq!(
        controller::referenced_secrets(&user),
        ["push-auth", "redis-pw"]
    );
    let default = pushcluster(json!({}));
    assert_eq!(
        controller::referenced_secrets(&default),
        ["demo-auth", "demo-redis-auth"]
    );
    let open = pushcluster(
        json!({ "auth": { "insecure": true }, "redis": { "auth": { "insecure": true } } }),
    );
    assert!(controller::referenced_secrets(&open).is_empty());
}

/// A `redis.auth.secretRef` whose Secret lacks the key: RedisAuthSecretMissing,
/// no push-server rollout, and the probes go without a password they do not have.
#[tokio::test]
async fn missing_redis_password_fails_closed() {
    let redis = topology(0, None);
    let (ctx, mut handle) = context(redis.clone());
    let spec = json!({ "auth": { "insecure": true },
                       "redis": { "auth": { "secretRef": { "name": "my-redis", "key": "pw" } } } });
    let pc = Arc::new(pushcluster(spec));
    let server = tokio::spawn(async move {
        expect_secret_get(
            &mut handle,
            "my-redis",
            Some(secret("my-redis", &[("password", "wrong-key")])),
        )
        .await;
        expect_rollout(&mut handle, Rollout::WithoutServer).await;
        let status = expect_status(&mut handle).await;
        let ev = expect_event(&mut handle, "RedisAuthSecretMissing", "Warning").await;
        expect_event(&mut handle, "RedisMaster", "Normal").await;
        expect_no_more(handle).await;
        (status, ev)
    });
    controller::reconcile(pc, ctx).await.expect("reconcile");
    let (status, ev) = server.await.expect("scenario");
    assert_eq!(
        condition(&status, "Ready")["reason"],
        "RedisAuthSecretMissing"
    );
    assert_eq!(condition(&status, "ServerReady")["status"], "False");
    let note = ev["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("my-redis") && note.contains("\"pw\""),
        "{note}"
    );
    assert_eq!(redis.passwords.lock().unwrap().clone(), vec![None]);
}
