//! Unit tests of the object builders: defaults, overrides, Cluster mode,
//! autoscaling on and off.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Container};
use push_operator::crd::{PushCluster, RedisMode};
use push_operator::objects::{self, Desired, Settings};

fn pc(spec_yaml: &str) -> PushCluster {
    let doc = format!(
        "apiVersion: push.dev/v1alpha1\nkind: PushCluster\nmetadata: {{name: demo, namespace: realtime, uid: 1234-uid}}\nspec:\n{spec_yaml}"
    );
    serde_yaml::from_str(&doc).expect("test manifest parses")
}

fn built(pc: &PushCluster) -> Vec<Desired> {
    objects::desired(pc, &Settings::default()).expect("builders succeed")
}

fn ids(objs: &[Desired]) -> Vec<String> {
    objs.iter().map(Desired::id).collect()
}

fn deployment(objs: &[Desired]) -> &Deployment {
    objs.iter()
        .find_map(|o| match o {
            Desired::Deployment(d) => Some(d),
            _ => None,
        })
        .expect("a Deployment")
}

fn server_container(objs: &[Desired]) -> Container {
    deployment(objs)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn find<'a>(objs: &'a [Desired], id: &str) -> &'a Desired {
    objs.iter()
        .find(|o| o.id() == id)
        .unwrap_or_else(|| panic!("{id} missing"))
}

#[test]
fn defaults_fill_every_field() {
    let pc = pc("  {}");
    let s = &pc.spec;
    assert_eq!(s.replicas, 2);
    assert!(s.autoscaling.enabled);
    assert_eq!(
        (s.autoscaling.min_replicas, s.autoscaling.max_replicas),
        (2, 20)
    );
    assert_eq!(s.autoscaling.target_connections_per_pod, 10_000);
    assert_eq!(s.server.heartbeat, "25s");
    assert_eq!(s.server.drain_period, "30s");
    assert_eq!(s.server.history_size, 100);
    assert_eq!(s.redis.mode, RedisMode::Replication);
    assert_eq!(s.redis.replicas, 2);
    assert_eq!(s.redis.sentinel.replicas, 3);
    assert_eq!(s.redis.storage.size, "1Gi");
    assert!(s.image.starts_with("ghcr.io/push-dev/push-server:"));
}

#[test]
fn default_replication_objects_in_apply_order() {
    let objs = built(&pc("  {}"));
    assert_eq!(
        ids(&objs),
        [
            "ConfigMap/demo-redis",
            "Service/demo-redis-headless",
            "Service/demo-redis-master",
            "StatefulSet/demo-redis",
            "PodDisruptionBudget/demo-redis",
            "Service/demo-sentinel",
            "StatefulSet/demo-sentinel",
            "PodDisruptionBudget/demo-sentinel",
            "ConfigMap/demo-push",
            "Deployment/demo-push",
            "Service/demo-push",
            "PodDisruptionBudget/demo-push",
            "HorizontalPodAutoscaler/demo-push",
        ]
    );
    for o in &objs {
        let v = o.to_json().unwrap();
        let owner = &v["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "PushCluster", "{}", o.id());
        assert_eq!(owner["controller"], true, "{}", o.id());
        assert_eq!(v["metadata"]["namespace"], "realtime");
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "push-operator"
        );
    }
}

#[test]
fn redis_statefulset_has_master_plus_replicas_and_pvcs() {
    let objs = built(&pc(
        "  redis: {replicas: 4, storage: {size: 5Gi, storageClassName: fast}}",
    ));
    let Desired::StatefulSet(sts) = find(&objs, "StatefulSet/demo-redis") else {
        panic!()
    };
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(5), "1 master + 4 replicas");
    assert_eq!(spec.service_name.as_deref(), Some("demo-redis-headless"));
    let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let pvc_spec = pvc.spec.as_ref().unwrap();
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        pvc_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "5Gi"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let boot = &pod.init_containers.as_ref().unwrap()[0];
    let args = boot.args.as_ref().unwrap();
    assert_eq!(args[0], "redis-boot");
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--redis-pods" && w[1] == "5"));
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    let conf = &cm.data.as_ref().unwrap()["redis.conf"];
    assert!(
        conf.contains("include /boot/boot.conf"),
        "replicaof comes from the boot step"
    );
    assert!(conf.contains("appendonly yes"));
}

#[test]
fn sentinel_and_master_service() {
    let objs = built(&pc("  redis: {sentinel: {replicas: 5}}"));
    let Desired::StatefulSet(sts) = find(&objs, "StatefulSet/demo-sentinel") else {
        panic!()
    };
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(5));
    let Desired::Service(svc) = find(&objs, "Service/demo-redis-master") else {
        panic!()
    };
    let sel = svc.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert_eq!(sel[objects::ROLE_LABEL], "master");
    let c = server_container(&objs);
    let sentinels = env_value(&c, "PUSH_REDIS_SENTINEL").unwrap();
    assert_eq!(sentinels.split(',').count(), 5);
    assert!(sentinels.starts_with("demo-sentinel-0.demo-sentinel.realtime.svc.cluster.local:26379"));
    assert_eq!(
        env_value(&c, "PUSH_REDIS_MASTER_NAME").as_deref(),
        Some("push")
    );
    assert_eq!(env_value(&c, "PUSH_REDIS_CLUSTER"), None);
}

#[test]
fn cluster_mode() {
    let objs = built(&pc(
        "  redis: {mode: Cluster, cluster: {shards: 3, replicasPerShard: 1}}",
    ));
    assert_eq!(
        ids(&objs)[..5],
        [
            "ConfigMap/demo-redis",
            "Service/demo-redis-headless",
            "StatefulSet/demo-redis",
            "PodDisruptionBudget/demo-redis",
            "Job/demo-redis-cluster-init-3x2",
        ]
    );
    assert!(!ids(&objs).iter().any(|i| i.contains("sentinel")));
    let Desired::StatefulSet(sts) = find(&objs, "StatefulSet/demo-redis") else {
        panic!()
    };
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(6));
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    assert!(cm.data.as_ref().unwrap()["redis.conf"].contains("cluster-enabled yes"));
    let Desired::Job(job) = find(&objs, "Job/demo-redis-cluster-init-3x2") else {
        panic!()
    };
    let script = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .command
        .as_ref()
        .unwrap()[2];
    assert!(script.contains("--cluster-replicas 1"));
    assert!(script.contains("demo-redis-5.demo-redis-headless"));
    let c = server_container(&objs);
    assert_eq!(
        env_value(&c, "PUSH_REDIS_CLUSTER")
            .unwrap()
            .split(',')
            .count(),
        6
    );
    assert_eq!(env_value(&c, "PUSH_REDIS_SENTINEL"), None);
}

#[test]
fn autoscaling_on_leaves_replicas_to_the_hpa() {
    let objs = built(&pc("  replicas: 7\n  autoscaling: {minReplicas: 3, maxReplicas: 9, targetConnectionsPerPod: 5000}"));
    assert_eq!(deployment(&objs).spec.as_ref().unwrap().replicas, None);
    let json = find(&objs, "Deployment/demo-push").to_json().unwrap();
    assert!(
        json["spec"].get("replicas").is_none(),
        "never in the applied patch"
    );
    let Desired::HorizontalPodAutoscaler(hpa) = find(&objs, "HorizontalPodAutoscaler/demo-push")
    else {
        panic!()
    };
    let spec = hpa.spec.as_ref().unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 9));
    assert_eq!(spec.scale_target_ref.name, "demo-push");
    let metric = &spec.metrics.as_ref().unwrap()[0];
    assert_eq!(metric.type_, "Pods");
    let pods = metric.pods.as_ref().unwrap();
    assert_eq!(pods.metric.name, "push_connections");
    assert_eq!(pods.target.type_, "AverageValue");
    assert_eq!(pods.target.average_value.as_ref().unwrap().0, "5000");
    let down = spec.behavior.as_ref().unwrap().scale_down.as_ref().unwrap();
    assert_eq!(down.stabilization_window_seconds, Some(300));
}

#[test]
fn autoscaling_off_sets_replicas_and_drops_the_hpa() {
    let pc = pc("  replicas: 4\n  autoscaling: {enabled: false}");
    let objs = built(&pc);
    assert_eq!(deployment(&objs).spec.as_ref().unwrap().replicas, Some(4));
    assert!(!ids(&objs)
        .iter()
        .any(|i| i.starts_with("HorizontalPodAutoscaler")));
    let gone = objects::obsolete(&pc, &Settings::default()).unwrap();
    assert_eq!(gone[0].kind, "HorizontalPodAutoscaler");
    assert_eq!(gone[0].name, "demo-push");
}

#[test]
fn deployment_probes_grace_and_scrape() {
    let objs = built(&pc("  server: {drainPeriod: 1m}"));
    let d = deployment(&objs);
    let tpl = &d.spec.as_ref().unwrap().template;
    let pod = tpl.spec.as_ref().unwrap();
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(75),
        "60s drain + margin"
    );
    let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "8080");
    let c = &pod.containers[0];
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &["--config", "/etc/push/config.yaml"]
    );
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
}

#[test]
fn server_config_uses_spec_names() {
    let pc = pc("  server: {heartbeat: 10s, historySize: 0, maxConnectionLifetime: 1h, maxConnections: 50000, allowedOrigins: [\"https://a.example\", \"https://b.example\"], logFormat: text}");
    let yaml = objects::server::config_yaml(&pc).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v["heartbeat"], "10s");
    assert_eq!(v["history_size"], 0);
    assert_eq!(v["max_connection_lifetime"], "1h");
    assert_eq!(v["max_connections"], 50000);
    assert_eq!(v["drain_period"], "30s");
    assert_eq!(v["allowed_origins"], "https://a.example,https://b.example");
    assert_eq!(v["log_format"], "text");
    assert_eq!(v["listen"], "0.0.0.0:8080");
    assert!(
        v.get("idle_timeout").is_none(),
        "unset settings keep the server default"
    );
}

#[test]
fn config_change_rolls_the_pods() {
    let hash = |objs: &[Desired]| {
        deployment(objs)
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["push.dev/config-hash"]
            .clone()
    };
    assert_ne!(
        hash(&built(&pc("  {}"))),
        hash(&built(&pc("  server: {heartbeat: 5s}")))
    );
}

#[test]
fn auth_comes_from_the_secret() {
    let objs = built(&pc("  auth: {secretRef: {name: push-auth}}"));
    let c = server_container(&objs);
    let env = c.env.unwrap();
    for (var, key) in [
        ("PUSH_JWT_SECRET", "jwtSecret"),
        ("PUSH_JWT_PUBLIC_KEY", "jwtPublicKey"),
        ("PUSH_PUBLISH_KEY", "publishKey"),
    ] {
        let e = env
            .iter()
            .find(|e| e.name == var)
            .unwrap_or_else(|| panic!("{var}"));
        let r = e
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), r.optional),
            ("push-auth", key, Some(true))
        );
    }
    let without = server_container(&built(&pc("  {}")));
    assert!(!without
        .env
        .unwrap()
        .iter()
        .any(|e| e.name.starts_with("PUSH_JWT")));
}

#[test]
fn overrides_image_and_resources() {
    let objs = built(&pc(
        "  image: registry.example/push:1.2.3\n  imagePullPolicy: Always\n  resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {memory: 1Gi}}\n  redis: {image: redis:7.2, resources: {requests: {memory: 2Gi}}}",
    ));
    let c = server_container(&objs);
    assert_eq!(c.image.as_deref(), Some("registry.example/push:1.2.3"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let res = c.resources.unwrap();
    assert_eq!(res.requests.unwrap()["cpu"].0, "500m");
    let Desired::StatefulSet(sts) = find(&objs, "StatefulSet/demo-redis") else {
        panic!()
    };
    let redis = &sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(redis.image.as_deref(), Some("redis:7.2"));
    assert_eq!(
        redis.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"].0,
        "2Gi"
    );
}

#[test]
fn invalid_specs_are_errors_not_panics() {
    for (spec, needle) in [
        (
            "  autoscaling: {minReplicas: 5, maxReplicas: 2}",
            "minReplicas must not exceed maxReplicas",
        ),
        ("  replicas: 0", "spec.replicas"),
        ("  server: {drainPeriod: soon}", "drainPeriod"),
        ("  redis: {storage: {size: lots}}", "storage.size"),
        ("  redis: {mode: Cluster, cluster: {shards: 2}}", "shards"),
    ] {
        let err = objects::desired(&pc(spec), &Settings::default()).unwrap_err();
        assert_eq!(err.metric_label(), "invalid_spec");
        assert!(err.to_string().contains(needle), "{spec}: {err}");
    }
}

#[test]
fn cel_rule_rejects_min_above_max() {
    use push_operator::crd::Autoscaling;
    let ok = serde_json::to_value(Autoscaling::default()).unwrap();
    assert!(Autoscaling::validate_cel(&ok, None).is_ok());
    let mut bad = ok.clone();
    bad["minReplicas"] = 30.into();
    assert!(Autoscaling::validate_cel(&bad, None).is_err());
}

#[test]
fn render_prints_every_object_as_multi_doc_yaml() {
    let manifest =
        "apiVersion: push.dev/v1alpha1\nkind: PushCluster\nmetadata: {name: demo}\nspec: {}\n";
    let out = push_operator::render::render(manifest, &Settings::default()).unwrap();
    let docs: Vec<serde_yaml::Value> = out
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 13);
    assert!(docs
        .iter()
        .all(|d| d["apiVersion"].is_string() && d["kind"].is_string()));
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "default"));
}
