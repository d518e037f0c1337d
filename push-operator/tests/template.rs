//! `spec.template` and `spec.redis.template`: what a user sets shows up in
//! the pods and Services, without breaking what the operator relies on
//! (selectors, its annotations, its own variables).

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{PodSpec, PodTemplateSpec, Service},
};
use push_operator::crd::PushCluster;
use push_operator::objects::{self, Desired, Settings};
use push_operator::Error;

mod manifest;
use manifest::{built, deployment, pc};

fn statefulset<'a>(objs: &'a [Desired], name: &str) -> &'a StatefulSet {
    objs.iter()
        .find_map(|o| match o {
            Desired::StatefulSet(s) if o.name() == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("StatefulSet {name}"))
}

fn service<'a>(objs: &'a [Desired], name: &str) -> &'a Service {
    objs.iter()
        .find_map(|o| match o {
            Desired::Service(s) if o.name() == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("Service {name}"))
}

fn pod_template(d: &Deployment) -> &PodTemplateSpec {
    &d.spec.as_ref().expect("spec").template
}

fn pod_spec(t: &PodTemplateSpec) -> &PodSpec {
    t.spec.as_ref().expect("pod spec")
}

const SERVER_TEMPLATE: &str = r#"
  template:
    pod:
      metadata:
        labels: {team: realtime, app.kubernetes.io/name: not-push}
        annotations: {example.com/owner: alice, push.dev/config-hash: "0"}
      imagePullSecrets: [{name: registry}]
      nodeSelector: {pool: edge}
      tolerations: [{key: dedicated, operator: Equal, value: push, effect: NoSchedule}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [edge]}]}]
      topologySpreadConstraints:
        - {maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
           labelSelector: {matchLabels: {app.kubernetes.io/instance: demo}}}
      priorityClassName: realtime-high
      serviceAccountName: push-pods
    container:
      env: [{name: RUST_LOG, value: "info,push_server=debug"}, {name: TZ, value: UTC}]
    service:
      type: LoadBalancer
      annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}
"#;

#[test]
fn server_template_reaches_the_push_pods_and_service() {
    let default_objs = built(&pc("  {}"));
    let objs = built(&pc(SERVER_TEMPLATE));
    let d = deployment(&objs);
    let t = pod_template(d);
    let meta = t.metadata.as_ref().expect("pod metadata");
    let labels = meta.labels.as_ref().expect("labels");
    assert_eq!(labels["team"], "realtime");
    assert_eq!(
        labels["app.kubernetes.io/name"], "push",
        "operator labels win: the Deployment selector must still match"
    );
    let selector = d
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .as_ref()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "selector label {k}");
    }
    let annotations = meta.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["example.com/owner"], "alice");
    let default_hash = pod_template(deployment(&default_objs))
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("push.dev/config-hash"))
        .cloned();
    assert_eq!(
        annotations.get("push.dev/config-hash").cloned(),
        default_hash,
        "the operator's config hash is not overridable"
    );

    let spec = pod_spec(t);
    assert_eq!(
        spec.image_pull_secrets.as_ref().unwrap()[0].name,
        "registry"
    );
    assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "edge");
    let tol = &spec.tolerations.as_ref().unwrap()[0];
    assert_eq!(
        (tol.key.as_deref(), tol.effect.as_deref()),
        (Some("dedicated"), Some("NoSchedule"))
    );
    let affinity = spec.affinity.as_ref().unwrap();
    assert!(affinity.node_affinity.is_some(), "user nodeAffinity added");
    assert!(
        affinity.pod_anti_affinity.is_some(),
        "the default anti-affinity stays when the user gives none"
    );
    let tsc = spec.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(tsc.len(), 1, "user constraints replace the default");
    assert_eq!(tsc[0].topology_key, "kubernetes.io/hostname");
    assert_eq!(spec.priority_class_name.as_deref(), Some("realtime-high"));
    assert_eq!(spec.service_account_name.as_deref(), Some("push-pods"));

    let c = &spec.containers[0];
    let env = c.env.as_ref().unwrap();
    let default_env = pod_spec(pod_template(deployment(&default_objs))).containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert_eq!(
        &env[..default_env.len()],
        &default_env[..],
        "the operator's variables come first, unchanged"
    );
    let extra: Vec<_> = env[default_env.len()..]
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        extra,
        [
            ("RUST_LOG", Some("info,push_server=debug")),
            ("TZ", Some("UTC"))
        ]
    );

    let svc = service(&objs, "demo-push");
    let s = svc.spec.as_ref().unwrap();
    assert_eq!(s.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        svc.metadata.annotations.as_ref().unwrap()
            ["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    let ports: Vec<_> = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    assert!(ports.contains(&"http"), "{ports:?}");
    assert!(
        !ports.contains(&"metrics"),
        "a load balancer must not publish the metrics port: {ports:?}"
    );
    assert_eq!(
        s.selector,
        service(&default_objs, "demo-push")
            .spec
            .as_ref()
            .unwrap()
            .selector,
        "Service selector unchanged"
    );

    // Redis pods are not touched by the push template.
    let redis = statefulset(&objs, "demo-redis");
    let rs = redis.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(rs.image_pull_secrets.is_none());
    assert!(rs.priority_class_name.is_none());
}

#[test]
fn redis_template_reaches_redis_and_sentinel_but_not_the_boot_step() {
    let objs = built(&pc(r#"
  redis:
    template:
      pod:
        metadata: {labels: {team: data}}
        imagePullSecrets: [{name: registry}]
        tolerations: [{key: redis, operator: Exists}]
        affinity:
          podAntiAffinity:
            requiredDuringSchedulingIgnoredDuringExecution:
              - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/instance: demo}}}
        priorityClassName: redis-critical
      container:
        env: [{name: TZ, value: UTC}]
      service:
        annotations: {example.com/scrape: "false"}
"#));
    for name in ["demo-redis", "demo-sentinel"] {
        let sts = statefulset(&objs, name);
        let t = &sts.spec.as_ref().unwrap().template;
        assert_eq!(
            t.metadata.as_ref().unwrap().labels.as_ref().unwrap()["team"],
            "data",
            "{name}"
        );
        let spec = t.spec.as_ref().unwrap();
        assert_eq!(
            spec.image_pull_secrets.as_ref().unwrap()[0].name,
            "registry"
        );
        assert_eq!(spec.priority_class_name.as_deref(), Some("redis-critical"));
        let anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .expect("anti-affinity");
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_some()
                && anti
                    .preferred_during_scheduling_ignored_during_execution
                    .is_none(),
            "{name}: the user's podAntiAffinity replaces the default"
        );
        for c in &spec.containers {
            assert!(
                c.env.iter().flatten().any(|e| e.name == "TZ"),
                "{name}/{}: extra env",
                c.name
            );
        }
        for c in spec.init_containers.iter().flatten() {
            assert!(
                !c.env.iter().flatten().any(|e| e.name == "TZ"),
                "{name}/{}: the operator's boot step gets no user env",
                c.name
            );
        }
    }
    for name in ["demo-redis-headless", "demo-redis-master", "demo-sentinel"] {
        let svc = service(&objs, name);
        assert_eq!(
            svc.metadata.annotations.as_ref().unwrap()["example.com/scrape"],
            "false",
            "{name}"
        );
    }
    let push = pod_spec(pod_template(deployment(&objs)));
    assert!(push.image_pull_secrets.is_none(), "push pods untouched");
    assert!(service(&objs, "demo-push").metadata.annotations.is_none());
}

#[test]
fn operator_variables_cannot_be_overridden() {
    for (spec, var) in [
        (
            "  template: {container: {env: [{name: PUSH_REQUIRE_AUTH, value: \"false\"}]}}",
            "PUSH_REQUIRE_AUTH",
        ),
        (
            "  template: {container: {env: [{name: PUSH_REDIS_SENTINEL, value: evil:26379}]}}",
            "PUSH_REDIS_SENTINEL",
        ),
        (
            "  redis: {template: {container: {env: [{name: REDIS_PASSWORD, value: x}]}}}",
            "REDIS_PASSWORD",
        ),
    ] {
        let err = objects::desired(&pc(spec), &Settings::default())
            .expect_err("a reserved variable is refused");
        let Error::InvalidSpec(msg) = err else {
            panic!("{var}: expected InvalidSpec, got {err}")
        };
        assert!(msg.contains(var), "{msg}");
        assert!(msg.contains("container.env"), "names the field: {msg}");
    }
    // Other names, also in the Redis template, are fine.
    built(&pc(
        "  template: {container: {env: [{name: RUST_LOG, value: debug}]}}\n  redis: {template: {container: {env: [{name: PUSH_X, value: y}]}}}",
    ));
}

#[test]
fn no_template_changes_nothing() {
    let plain = built(&pc("  {}"));
    let empty = built(&pc(
        "  template: {pod: {}, container: {}, service: {}}\n  redis: {template: {}}",
    ));
    assert_eq!(plain, empty);
}

#[test]
fn crd_schema_uses_the_kubernetes_pod_types() {
    let crd =
        serde_json::to_value(<PushCluster as kube::CustomResourceExt>::crd()).expect("crd json");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    let pod = &spec["template"]["properties"]["pod"]["properties"];
    let toleration = &pod["tolerations"]["items"]["properties"];
    for f in ["key", "operator", "value", "effect", "tolerationSeconds"] {
        assert!(
            toleration.get(f).is_some(),
            "Toleration.{f} in {toleration}"
        );
    }
    assert!(pod["affinity"]["properties"]["nodeAffinity"].is_object());
    assert!(pod["topologySpreadConstraints"]["items"]["properties"]["maxSkew"].is_object());
    assert!(pod["imagePullSecrets"]["items"]["properties"]["name"].is_object());
    let env = &spec["template"]["properties"]["container"]["properties"]["env"]["items"];
    assert!(env["properties"]["valueFrom"].is_object());
    // kube writes an optional enum as nullable, with null among the values.
    let types: Vec<_> = spec["template"]["properties"]["service"]["properties"]["type"]["enum"]
        .as_array()
        .expect("Service type is an enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(types, ["ClusterIP", "NodePort", "LoadBalancer"]);
    let redis_template = &spec["redis"]["properties"]["template"]["properties"];
    assert!(redis_template["pod"]["properties"]["tolerations"].is_object());
    assert!(
        redis_template["service"]["properties"]
            .get("type")
            .is_none(),
        "Redis Services keep their type"
    );
}
