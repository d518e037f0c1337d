//! `spec.monitoring`: the PodMonitor scrapes the push pods' metrics port, the
//! PrometheusRule's alerts are valid PromQL that fire when they should
//! (`promtool test rules` on synthetic series), and API discovery tells
//! whether the Prometheus Operator is installed.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use push_operator::crd::PushCluster;
use push_operator::objects::{self, monitoring, Desired, Names, Settings};
use serde_json::{json, Value};
use tower_test::mock;

mod manifest;
use manifest::pc;

fn names(pc: &PushCluster) -> Names {
    Names::new(pc, &Settings::default()).expect("names")
}

#[test]
fn pod_monitor_selects_the_push_pods_metrics_port() {
    let pc =
        pc("  monitoring: {podMonitor: {enabled: true, interval: 15s, labels: {release: kps}}}");
    let n = names(&pc);
    let pm = monitoring::pod_monitor(&pc, &n, &pc.spec.monitoring.clone().unwrap().pod_monitor)
        .expect("pod monitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["labels"]["release"], "kps");
    assert_eq!(pm["metadata"]["ownerReferences"][0]["kind"], "PushCluster");
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["interval"], "15s");

    let objs = objects::desired(&pc, &Settings::default()).expect("objects");
    let d = objs
        .iter()
        .find_map(|o| match o {
            Desired::Deployment(d) => Some(d),
            _ => None,
        })
        .expect("deployment");
    let template = &d.spec.as_ref().unwrap().template;
    let pod_labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(
            pod_labels.get(k).map(String::as_str),
            v.as_str(),
            "PodMonitor selector {k} matches the pods"
        );
    }
    let ports: Vec<_> = template.spec.as_ref().unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| Some(p.as_str()) == endpoint["port"].as_str()),
        "the scraped port {} is a port of the push container: {ports:?}",
        endpoint["port"]
    );
}

fn promtool() -> &'static str {
    let ok = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool is needed to check the alert rules (Debian: apt-get install prometheus)"
    );
    "promtool"
}

fn write_rules(dir: &std::path::Path, pc: &PushCluster, annotations: bool) -> std::path::PathBuf {
    let mut groups = monitoring::rule_groups(pc, &names(pc));
    if !annotations {
        // `promtool test rules` compares annotations too; their templates
        // are checked by `promtool check rules`, the expressions here.
        for rule in groups[0]["rules"].as_array_mut().expect("rules") {
            rule.as_object_mut().expect("rule").remove("annotations");
        }
    }
    let rules = json!({ "groups": groups });
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&rules).expect("yaml")).expect("write rules");
    path
}

#[test]
fn alert_rules_pass_promtool_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_rules(dir.path(), &pc("  {}"), true);
    let out = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 rules found"), "{text}");
}

/// Synthetic series for `promtool test rules`: pod `a` of this cluster
/// loses Redis and nears the connection limit; a pod of another PushCluster
/// in the same namespace misbehaves too and must not alert.
const TESTS: &str = r#"
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'push_broker_up{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde"}'
        values: '1 1 0 0 0 0'
      - series: 'push_broker_up{namespace="realtime",pod="other-push-7d9f8b6c5-abcde"}'
        values: '0 0 0 0 0 0'
      - series: 'push_connections{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde",transport="ws"}'
        values: '40000+4000x10'
      - series: 'push_connections{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde",transport="sse"}'
        values: '5000x10'
      - series: 'push_slow_consumer_disconnects_total{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde"}'
        values: '0+60x30'
      - series: 'push_messages_published_total{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde"}'
        values: '0+600x30'
      - series: 'push_publish_errors_total{namespace="realtime",pod="demo-push-7d9f8b6c5-abcde",code="unauthorized"}'
        values: '0+0x5 0+120x25'
      - series: 'push_messages_published_total{namespace="realtime",pod="other-push-7d9f8b6c5-abcde"}'
        values: '0x30'
      - series: 'push_publish_errors_total{namespace="realtime",pod="other-push-7d9f8b6c5-abcde",code="broker_unavailable"}'
        values: '0+600x30'
    alert_rule_test:
      - eval_time: 1m
        alertname: PushBrokerDown
        exp_alerts: []
      - eval_time: 4m
        alertname: PushBrokerDown
        exp_alerts:
          - exp_labels: {severity: critical, namespace: realtime, pod: demo-push-7d9f8b6c5-abcde}
      - eval_time: 3m
        alertname: PushConnectionsNearLimit
        exp_alerts: []
      - eval_time: 10m
        alertname: PushConnectionsNearLimit
        exp_alerts:
          - exp_labels: {severity: warning, namespace: realtime, pod: demo-push-7d9f8b6c5-abcde}
      - eval_time: 25m
        alertname: PushSlowConsumerDisconnects
        exp_alerts:
          - exp_labels: {severity: warning, namespace: realtime, pod: demo-push-7d9f8b6c5-abcde}
      - eval_time: 12m
        alertname: PushPublishErrors
        exp_alerts: []
      - eval_time: 25m
        alertname: PushPublishErrors
        exp_alerts:
          - exp_labels: {severity: warning, namespace: realtime, pod: demo-push-7d9f8b6c5-abcde}
      - eval_time: 10m
        alertname: PushMetricsAbsent
        exp_alerts: []
"#;

#[test]
fn alerts_fire_for_this_cluster_only_and_at_the_configured_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 50000 cap → alert above 45000 connections (ws + sse summed per pod):
    // 45000 at 0m, 49000 at 1m, ... pending from 1m, firing from 6m.
    let path = write_rules(dir.path(), &pc("  server: {maxConnections: 50000}"), false);
    let tests = format!("rule_files: [{}]\n{TESTS}", path.display());
    let tests_path = dir.path().join("tests.yaml");
    std::fs::write(&tests_path, tests).expect("write tests");
    let out = std::process::Command::new(promtool())
        .args(["test", "rules"])
        .arg(&tests_path)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_alert_has_summary_description_and_a_runbook_section() {
    let pc = pc("  {}");
    let groups = monitoring::rule_groups(&pc, &names(&pc));
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md"))
        .expect("docs/operator.md");
    for rule in groups[0]["rules"].as_array().expect("rules") {
        let name = rule["alert"].as_str().expect("alert name");
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: {a}"
            );
        }
        assert!(
            rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&format!("docs/operator.md#{}", name.to_lowercase())),
            "{name}"
        );
        assert!(
            docs.contains(&format!("#### {name}")),
            "docs/operator.md has a runbook heading for {name}"
        );
    }
}

async fn discovery_answer(status: StatusCode, body: Value) -> monitoring::MonitoringCrds {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a discovery request")
            .expect("request");
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/apis/monitoring.coreos.com/v1");
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
    });
    let crds = monitoring::discover(&client).await.expect("discovery");
    server.await.expect("scenario");
    crds
}

#[tokio::test]
async fn discovery_reads_which_prometheus_operator_kinds_are_served() {
    let only_pod_monitors = json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
        "resources": [{ "name": "podmonitors", "singularName": "podmonitor", "namespaced": true,
                        "kind": "PodMonitor", "verbs": ["get", "list"] }],
    });
    assert_eq!(
        discovery_answer(StatusCode::OK, only_pod_monitors).await,
        monitoring::MonitoringCrds {
            pod_monitors: true,
            prometheus_rules: false
        }
    );
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "not found", "reason": "NotFound", "code": 404});
    assert_eq!(
        discovery_answer(StatusCode::NOT_FOUND, not_found).await,
        monitoring::MonitoringCrds::default(),
        "no CRDs: nothing served, and no error"
    );
}

#[test]
fn connection_alert_uses_push_servers_own_default_cap() {
    let pc = pc("  {}");
    let cap: i64 = push_config::MAX_CONNECTIONS
        .default
        .expect("push-server has a default max_connections")
        .parse()
        .expect("a number");
    let alert = monitoring::alerts(&pc, &names(&pc))
        .into_iter()
        .find(|a| a.name == "PushConnectionsNearLimit")
        .expect("alert");
    assert!(
        alert.expr.ends_with(&format!("> {}", cap * 9 / 10)),
        "{}",
        alert.expr
    );
    assert!(
        alert.description.contains(&format!("({cap})")),
        "{}",
        alert.description
    );
}
