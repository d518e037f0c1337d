//! `spec.expose` and the optional-object reconcile: the Ingress and
//! HTTPRoute route to the push Service's `http` port; optional objects are
//! server-side applied with the operator's field manager, removed when the
//! spec stops asking for them, and a missing API (CRDs not installed) is a
//! condition and one Warning Event, not a failed reconcile. Against a
//! mocked API server, every request asserted.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use push_operator::crd::{PushCluster, PushClusterStatus};
use push_operator::objects::monitoring::MonitoringCrds;
use push_operator::objects::{self, optional, Desired, Names, Settings};
use push_operator::Error;
use serde_json::{json, Value};

mod mock_api;
use mock_api::{client, expect_no_more, next, not_found, respond, ApiHandle};

fn pc(spec: Value, tracked: &[&str]) -> PushCluster {
    let mut v = json!({
        "apiVersion": "push.dev/v1alpha1",
        "kind": "PushCluster",
        "metadata": { "name": "demo", "namespace": "realtime", "uid": "uid-1", "generation": 2 },
        "spec": spec,
    });
    if !tracked.is_empty() {
        v["status"] = json!({ "optionalObjects": tracked });
    }
    serde_json::from_value(v).expect("valid PushCluster")
}

fn names(pc: &PushCluster) -> Names {
    Names::new(pc, &Settings::default()).expect("names")
}

fn push_service_port(pc: &PushCluster, name: &str) -> i32 {
    objects::desired(pc, &Settings::default())
        .expect("objects")
        .iter()
        .find_map(|o| match o {
            Desired::Service(s) if o.name() == "demo-push" => s.spec.clone(),
            _ => None,
        })
        .expect("push Service")
        .ports
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.port)
        .unwrap_or_else(|| panic!("push Service has a port {name}"))
}

#[test]
fn ingress_routes_the_hosts_to_the_push_service() {
    let pc = pc(
        json!({ "expose": { "ingress": {
            "enabled": true, "className": "traefik", "hosts": ["push.example.com"],
            "tls": { "secretName": "push-tls" },
            "annotations": { "cert-manager.io/cluster-issuer": "letsencrypt" } } } }),
        &[],
    );
    let objs = optional::desired(&pc, &names(&pc), None).expect("optional objects");
    assert_eq!(objs.len(), 1);
    let ing = &objs[0].object;
    assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ing["kind"], "Ingress");
    assert_eq!(ing["metadata"]["name"], "demo-push");
    assert_eq!(ing["metadata"]["ownerReferences"][0]["kind"], "PushCluster");
    assert_eq!(
        ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    assert_eq!(ing["spec"]["ingressClassName"], "traefik");
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "push-tls");
    assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "push.example.com");
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "push.example.com");
    let path = &rule["http"]["paths"][0];
    assert_eq!(
        (path["path"].as_str(), path["pathType"].as_str()),
        (Some("/"), Some("Prefix"))
    );
    let backend = &path["backend"]["service"];
    assert_eq!(backend["name"], "demo-push");
    assert_eq!(backend["port"]["name"], "http");
    push_service_port(&pc, "http");
}

#[test]
fn http_route_attaches_to_the_gateway_without_a_request_timeout() {
    let pc = pc(
        json!({ "expose": { "httpRoute": {
            "enabled": true,
            "parentRefs": [{ "name": "public", "namespace": "gateways", "sectionName": "https" }],
            "hostnames": ["push.example.com"] } } }),
        &[],
    );
    let objs = optional::desired(&pc, &names(&pc), None).expect("optional objects");
    let route = &objs[0].object;
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["kind"], "HTTPRoute");
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{ "name": "public", "namespace": "gateways", "sectionName": "https" }])
    );
    assert_eq!(route["spec"]["hostnames"], json!(["push.example.com"]));
    let rule = &route["spec"]["rules"][0];
    assert_eq!(
        rule["matches"][0]["path"],
        json!({ "type": "PathPrefix", "value": "/" })
    );
    assert_eq!(rule["backendRefs"][0]["name"], "demo-push");
    assert_eq!(
        rule["backendRefs"][0]["port"],
        push_service_port(&pc, "http"),
        "the route targets the Service's http port, not metrics"
    );
    assert_eq!(
        rule["timeouts"]["request"], "0s",
        "WebSocket and SSE streams outlive any request timeout"
    );

    let no_timeout = self::pc(
        json!({ "expose": { "httpRoute": { "enabled": true, "requestTimeout": "",
                                           "parentRefs": [{ "name": "public" }] } } }),
        &[],
    );
    let objs = optional::desired(&no_timeout, &names(&no_timeout), None).expect("objects");
    assert!(objs[0].object["spec"]["rules"][0].get("timeouts").is_none());
}

#[test]
fn an_enabled_route_without_a_gateway_is_refused() {
    let pc = pc(
        json!({ "expose": { "httpRoute": { "enabled": true } } }),
        &[],
    );
    let err = pc.spec.validate().expect_err("no parentRefs");
    let Error::InvalidSpec(msg) = err else {
        panic!("expected InvalidSpec, got {err}")
    };
    assert!(msg.contains("spec.expose.httpRoute.parentRefs"), "{msg}");
}

#[test]
fn monitoring_follows_discovery_unless_explicit() {
    let served = Some(MonitoringCrds {
        pod_monitors: true,
        prometheus_rules: true,
    });
    let absent = Some(MonitoringCrds::default());
    let kinds = |spec: Value, crds| {
        let pc = pc(spec, &[]);
        optional::desired(&pc, &names(&pc), crds)
            .expect("objects")
            .iter()
            .map(|o| (o.id(), o.explicit))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(json!({}), served),
        [
            ("PodMonitor/demo-push".to_string(), false),
            ("PrometheusRule/demo-push".to_string(), false)
        ]
    );
    assert!(kinds(json!({}), absent).is_empty());
    assert!(kinds(json!({}), None).is_empty(), "unknown yet: nothing");
    assert_eq!(
        kinds(
            json!({ "monitoring": { "podMonitor": { "enabled": true } } }),
            absent
        ),
        [("PodMonitor/demo-push".to_string(), true)],
        "explicit: attempted even if discovery says absent"
    );
    assert!(kinds(
        json!({ "monitoring": { "podMonitor": { "enabled": false },
                                "prometheusRule": { "enabled": false } } }),
        served
    )
    .is_empty());
}

/// Answers one server-side apply of `path`, with `status`; returns the body.
async fn expect_apply(handle: &mut ApiHandle, path: &str, status: StatusCode) -> Value {
    let (req, send) = next(handle, path).await;
    mock_api::assert_apply(&req, path);
    let body = mock_api::body_json(req).await;
    if status.is_success() {
        respond(send, status, &body);
    } else {
        respond(send, status, &not_found());
    }
    body
}

async fn expect_delete(handle: &mut ApiHandle, path: &str) {
    let (req, send) = next(handle, path).await;
    assert_eq!(req.method(), http::Method::DELETE, "{path}");
    assert_eq!(req.uri().path(), path);
    respond(
        send,
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    );
}

const INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/realtime/ingresses/demo-push";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/realtime/httproutes/demo-push";
const POD_MONITOR: &str =
    "/apis/monitoring.coreos.com/v1/namespaces/realtime/podmonitors/demo-push";
const RULE: &str = "/apis/monitoring.coreos.com/v1/namespaces/realtime/prometheusrules/demo-push";

#[tokio::test]
async fn applies_what_is_asked_and_reports_a_missing_prometheus_operator() {
    let (client, mut handle) = client();
    let pc = pc(
        json!({ "expose": { "ingress": { "enabled": true } },
                "monitoring": { "podMonitor": { "enabled": true } } }),
        &[],
    );
    let n = names(&pc);
    let server = tokio::spawn(async move {
        let ing = expect_apply(&mut handle, INGRESS, StatusCode::OK).await;
        let pm = expect_apply(&mut handle, POD_MONITOR, StatusCode::NOT_FOUND).await;
        expect_no_more(handle).await;
        (ing, pm)
    });
    let outcome = optional::reconcile(&client, &pc, &n, Some(MonitoringCrds::default()))
        .await
        .expect("a missing API is not a reconcile error");
    let (ing, pm) = server.await.expect("scenario");
    assert_eq!(ing["kind"], "Ingress");
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(outcome.objects, ["Ingress/demo-push"]);

    let mut st = PushClusterStatus::default();
    let events = optional::write_status(&outcome, &mut st, "t1", Some(2));
    assert_eq!(st.optional_objects, ["Ingress/demo-push"]);
    let cond = |st: &PushClusterStatus, t: &str| {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .cloned()
            .unwrap_or_else(|| panic!("condition {t}"))
    };
    assert_eq!(cond(&st, "ExposeReady").status, "True");
    let m = cond(&st, "MonitoringReady");
    assert_eq!(
        (m.status.as_str(), m.reason.as_str()),
        ("False", "PrometheusOperatorMissing")
    );
    assert!(
        m.message.contains("monitoring.coreos.com/v1"),
        "{}",
        m.message
    );
    assert_eq!(events.len(), 1, "one Warning Event: {events:?}");
    assert_eq!(events[0].0, "PrometheusOperatorMissing");
    // The next reconcile finds the same: no second Event.
    assert!(optional::write_status(&outcome, &mut st, "t2", Some(2)).is_empty());
    assert_eq!(cond(&st, "MonitoringReady").last_transition_time, "t1");
}

#[tokio::test]
async fn removes_what_the_spec_no_longer_asks_for() {
    let (client, mut handle) = client();
    // Earlier: Ingress, HTTPRoute, automatic PodMonitor and PrometheusRule.
    // Now: the route only; monitoring turned off explicitly.
    let pc = pc(
        json!({ "expose": { "httpRoute": { "enabled": true, "parentRefs": [{ "name": "gw" }] } },
                "monitoring": { "podMonitor": { "enabled": false }, "prometheusRule": { "enabled": false } } }),
        &[
            "Ingress/demo-push",
            "HTTPRoute/demo-push",
            "PodMonitor/demo-push",
            "PrometheusRule/demo-push",
        ],
    );
    let n = names(&pc);
    let server = tokio::spawn(async move {
        expect_delete(&mut handle, INGRESS).await;
        expect_delete(&mut handle, POD_MONITOR).await;
        expect_delete(&mut handle, RULE).await;
        expect_apply(&mut handle, ROUTE, StatusCode::OK).await;
        expect_no_more(handle).await;
    });
    let served = MonitoringCrds {
        pod_monitors: true,
        prometheus_rules: true,
    };
    let outcome = optional::reconcile(&client, &pc, &n, Some(served))
        .await
        .expect("reconcile");
    server.await.expect("scenario");
    assert_eq!(outcome.objects, ["HTTPRoute/demo-push"]);
    let mut st = pc.status.clone().unwrap_or_default();
    optional::write_status(&outcome, &mut st, "t", Some(2));
    assert!(st.conditions.iter().all(|c| c.type_ != "MonitoringReady"));
}

#[tokio::test]
async fn nothing_asked_nothing_tracked_makes_no_calls() {
    let (client, handle) = client();
    let pc = pc(json!({}), &[]);
    let n = names(&pc);
    let outcome = optional::reconcile(&client, &pc, &n, Some(MonitoringCrds::default()))
        .await
        .expect("reconcile");
    assert_eq!(outcome, optional::Outcome::default());
    expect_no_more(handle).await;
}

#[tokio::test]
async fn automatic_monitoring_is_kept_while_discovery_has_no_answer() {
    let (client, handle) = client();
    let pc = pc(json!({}), &["PodMonitor/demo-push"]);
    let n = names(&pc);
    let outcome = optional::reconcile(&client, &pc, &n, None)
        .await
        .expect("reconcile");
    assert_eq!(
        outcome.objects,
        ["PodMonitor/demo-push"],
        "neither deleted nor forgotten"
    );
    expect_no_more(handle).await;
}

/// Healthy Redis, for the full reconcile below.
struct HealthyRedis;

impl push_operator::controller::RedisOps for HealthyRedis {
    fn observe(
        &self,
        _ep: push_operator::redis_probe::Endpoints,
    ) -> push_operator::controller::BoxFut<push_operator::topology::Observation> {
        use push_operator::topology::{Observation, PodState, Role, Running};
        let up = |role| {
            PodState::Up(Running {
                role,
                offset: 100,
                keys: 1,
            })
        };
        let obs = Observation {
            pods: vec![
                up(Role::Master),
                up(Role::Replica {
                    master: Some(0),
                    link_up: true,
                }),
                up(Role::Replica {
                    master: Some(0),
                    link_up: true,
                }),
            ],
            sentinel_master: Some(0),
            failover_in_progress: false,
        };
        Box::pin(async move { obs })
    }
    fn execute(
        &self,
        _ep: push_operator::redis_probe::Endpoints,
        _action: push_operator::topology::Action,
    ) -> push_operator::controller::BoxFut<push_operator::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// One recorded request: method, path, query, JSON body.
type Recorded = (String, String, String, Value);

/// Answers every request of a whole reconcile (whatever the core objects
/// are): applies are echoed as stored and ready, except Prometheus Operator
/// kinds (404: CRDs not installed); the PushCluster status patch is echoed.
async fn answer_all(mut handle: ApiHandle) -> Vec<Recorded> {
    let mut seen = Vec::new();
    while let Ok(Some((req, send))) =
        tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await
    {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req.into_body().collect().await.expect("body").to_bytes();
        let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        seen.push((method.clone(), path.clone(), query, body.clone()));
        match method.as_str() {
            "PATCH" if path.starts_with("/apis/monitoring.coreos.com/") => {
                respond(send, StatusCode::NOT_FOUND, &not_found())
            }
            "PATCH" if path.ends_with("/status") => {
                let mut pc = serde_json::to_value(self::pc(json!({}), &[])).expect("pc");
                pc["status"] = body["status"].clone();
                respond(send, StatusCode::OK, &pc)
            }
            "PATCH" => {
                let r = body["spec"]["replicas"].as_i64().unwrap_or(3);
                if matches!(body["kind"].as_str(), Some("StatefulSet" | "Deployment")) {
                    body["status"] = json!({ "replicas": r, "readyReplicas": r });
                }
                respond(send, StatusCode::OK, &body)
            }
            "POST" => respond(send, StatusCode::CREATED, &body),
            "DELETE" => respond(
                send,
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
            _ => respond(send, StatusCode::NOT_FOUND, &not_found()),
        }
    }
    seen
}

async fn full_reconcile(pc: PushCluster) -> Vec<Recorded> {
    let (client, handle) = client();
    let ctx = std::sync::Arc::new(push_operator::controller::Context::new(
        client,
        Settings::default(),
        push_operator::metrics::Metrics::default(),
        std::sync::Arc::new(HealthyRedis),
    ));
    ctx.monitoring_api.set(MonitoringCrds::default());
    let server = tokio::spawn(answer_all(handle));
    push_operator::controller::reconcile(std::sync::Arc::new(pc), ctx)
        .await
        .expect("a missing Prometheus Operator does not fail the reconcile");
    server.await.expect("responder")
}

#[tokio::test]
async fn the_controller_applies_records_and_reports_optional_objects() {
    let spec = json!({
        "auth": { "insecure": true },
        "redis": { "auth": { "insecure": true } },
        "expose": { "ingress": { "enabled": true, "hosts": ["push.example.com"] } },
        "monitoring": { "podMonitor": { "enabled": true } },
    });
    let seen = full_reconcile(pc(spec.clone(), &[])).await;
    let ingress = seen
        .iter()
        .find(|(m, p, _, _)| m == "PATCH" && p == INGRESS)
        .expect("the Ingress is applied");
    assert!(ingress.2.contains("fieldManager=push-operator") && ingress.2.contains("force=true"));
    assert_eq!(ingress.3["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert!(seen
        .iter()
        .any(|(m, p, _, _)| m == "PATCH" && p == POD_MONITOR));
    let status = seen
        .iter()
        .rev()
        .find(|(m, p, _, _)| m == "PATCH" && p.ends_with("/pushclusters/demo/status"))
        .map(|r| r.3["status"].clone())
        .expect("a status patch");
    assert_eq!(status["optionalObjects"], json!(["Ingress/demo-push"]));
    let cond = |t: &str| {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
            .unwrap_or_else(|| panic!("condition {t} in {status}"))
    };
    assert_eq!(cond("ExposeReady")["status"], "True");
    assert_eq!(cond("MonitoringReady")["status"], "False");
    assert_eq!(
        cond("MonitoringReady")["reason"],
        "PrometheusOperatorMissing"
    );
    let warnings = |seen: &[Recorded]| {
        seen.iter()
            .filter(|(m, p, _, b)| {
                m == "POST" && p.ends_with("/events") && b["reason"] == "PrometheusOperatorMissing"
            })
            .inspect(|(_, _, _, b)| assert_eq!(b["type"], "Warning"))
            .count()
    };
    assert_eq!(warnings(&seen), 1, "one Warning Event");

    // Next reconcile, same situation: the Ingress is applied again, no
    // second Event.
    let mut again = pc(spec, &[]);
    again.status = Some(serde_json::from_value(status).expect("status round-trips"));
    let seen = full_reconcile(again).await;
    assert!(seen.iter().any(|(m, p, _, _)| m == "PATCH" && p == INGRESS));
    assert_eq!(warnings(&seen), 0);
}
