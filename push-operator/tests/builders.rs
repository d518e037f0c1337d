//! Unit tests of the object builders: defaults, overrides, Cluster mode,
//! autoscaling on and off.

use k8s_openapi::api::core::v1::Container;
use push_operator::crd::RedisMode;
use push_operator::objects::{self, Desired, Settings};

mod manifest;
use manifest::{built, deployment, pc};

fn ids(objs: &[Desired]) -> Vec<String> {
    objs.iter().map(Desired::id).collect()
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

/// The container of the default Redis Cluster's creation Job (3 shards × 2).
fn init_job_container(objs: &[Desired]) -> &Container {
    let Desired::Job(job) = find(objs, "Job/demo-redis-cluster-init-3x2") else {
        panic!("no cluster init Job")
    };
    let pod = job.spec.as_ref().expect("job spec").template.spec.as_ref();
    &pod.expect("pod spec").containers[0]
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
    assert_eq!(s.image, None, "no image stored: resolved at reconcile");
    assert!(s
        .resolved_image()
        .starts_with("ghcr.io/push-dev/push-server:"));
    assert_eq!(s.resolved_redis_image(), "docker.io/library/redis:7.4");
}

#[test]
fn default_replication_objects_in_apply_order() {
    let objs = built(&pc("  {}"));
    assert_eq!(
        ids(&objs),
        [
            "NetworkPolicy/demo-redis",
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
    // redis-server runs the config the boot step wrote into the writable
    // emptyDir, so Sentinel's CONFIG REWRITE after a failover lands there.
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--out" && w[1] == "/boot/redis.conf"));
    let redis = &pod.containers[0];
    assert_eq!(
        redis.command.as_ref().unwrap()[..2],
        ["redis-server".to_string(), "/boot/redis.conf".to_string()]
    );
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    let conf = &cm.data.as_ref().unwrap()["redis.conf"];
    assert!(
        !conf.contains("replicaof"),
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
    assert_eq!(
        sel["statefulset.kubernetes.io/pod-name"], "demo-redis-0",
        "pod 0 before any master is known"
    );
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
        ids(&objs)[..6],
        [
            "NetworkPolicy/demo-redis",
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
    let script = &init_job_container(&objs).command.as_ref().unwrap()[2];
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
    assert!(gone
        .iter()
        .any(|o| o.kind == "HorizontalPodAutoscaler" && o.name == "demo-push"));
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
    assert_eq!(
        ann["prometheus.io/port"], "9090",
        "scrapes use the metrics port"
    );
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
    let ports: Vec<(String, i32)> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("metrics".to_string(), 9090)]
    );
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
    assert_eq!(
        v["allowed_origins"],
        serde_yaml::from_str::<serde_yaml::Value>("[https://a.example, https://b.example]")
            .unwrap(),
        "a YAML list in the file"
    );
    assert_eq!(v["log_format"], "text");
    assert_eq!(v["listen"], "0.0.0.0:8080");
    assert_eq!(v["metrics_listen"], "0.0.0.0:9090");
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

fn secret_ref(c: &Container, var: &str) -> Option<(String, String, Option<bool>)> {
    let e = c.env.as_ref()?.iter().find(|e| e.name == var)?;
    let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((r.name.clone(), r.key.clone(), r.optional))
}

#[test]
fn auth_comes_from_the_secret_and_is_required() {
    for (spec, secret) in [
        ("  auth: {secretRef: {name: push-auth}}", "push-auth"),
        // Omitted: the Secret the operator generates.
        ("  {}", "demo-auth"),
    ] {
        let c = server_container(&built(&pc(spec)));
        for (var, key) in [
            ("PUSH_JWT_SECRET", "jwtSecret"),
            ("PUSH_JWT_PUBLIC_KEY", "jwtPublicKey"),
            ("PUSH_PUBLISH_KEY", "publishKey"),
        ] {
            assert_eq!(
                secret_ref(&c, var),
                Some((secret.to_string(), key.to_string(), Some(true))),
                "{spec}: {var}"
            );
        }
        assert_eq!(
            env_value(&c, "PUSH_REQUIRE_AUTH").as_deref(),
            Some("true"),
            "{spec}: the server refuses to start without a key"
        );
    }
    let open = server_container(&built(&pc("  auth: {insecure: true}")));
    let env = open.env.unwrap();
    assert!(!env
        .iter()
        .any(|e| e.name.starts_with("PUSH_JWT") || e.name == "PUSH_REQUIRE_AUTH"));
}

#[test]
fn auth_needs_either_a_secret_or_insecure() {
    for spec in [
        "  auth: {}",
        "  auth: {secretRef: {name: x}, insecure: true}",
        "  redis: {auth: {}}",
    ] {
        let err = objects::desired(&pc(spec), &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("insecure: true"), "{spec}: {err}");
    }
    use push_operator::crd::AuthSpec;
    let both = serde_json::json!({"secretRef": {"name": "x"}, "insecure": true});
    assert!(AuthSpec::validate_cel(&both, None).is_err());
    assert!(AuthSpec::validate_cel(&serde_json::json!({}), None).is_err());
    assert!(AuthSpec::validate_cel(&serde_json::json!({"insecure": true}), None).is_ok());
    assert!(AuthSpec::validate_cel(&serde_json::json!({"secretRef": {"name": "x"}}), None).is_ok());
}

fn pod_specs(objs: &[Desired]) -> Vec<(String, k8s_openapi::api::core::v1::PodSpec)> {
    objs.iter()
        .filter_map(|o| {
            let spec = match o {
                Desired::Deployment(d) => d.spec.as_ref()?.template.spec.clone(),
                Desired::StatefulSet(s) => s.spec.as_ref()?.template.spec.clone(),
                Desired::Job(j) => j.spec.as_ref()?.template.spec.clone(),
                _ => None,
            }?;
            Some((o.id(), spec))
        })
        .collect()
}

#[test]
fn every_pod_is_restricted_and_has_requests() {
    for spec in [
        "  {}",
        "  redis: {mode: Cluster}",
        "  auth: {insecure: true}\n  redis: {auth: {insecure: true}}",
    ] {
        let objs = built(&pc(spec));
        let pods = pod_specs(&objs);
        assert!(pods.len() >= 3, "{spec}");
        for (id, pod) in pods {
            assert_eq!(pod.automount_service_account_token, Some(false), "{id}");
            let psc = pod.security_context.as_ref().expect("pod securityContext");
            assert_eq!(psc.run_as_non_root, Some(true), "{id}");
            let uid = psc.run_as_user.expect("fixed UID");
            assert!(uid > 0, "{id}");
            let want = if id.starts_with("Deployment") {
                10001
            } else {
                999
            };
            assert_eq!(uid, want, "{id}");
            assert_eq!(psc.fs_group, Some(uid), "{id}: volumes writable");
            assert_eq!(
                psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault"),
                "{id}"
            );
            let containers = pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten());
            for c in containers {
                let who = format!("{id} {}", c.name);
                let sc = c
                    .security_context
                    .as_ref()
                    .expect("container securityContext");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{who}");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{who}");
                assert_eq!(
                    sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                    Some(vec!["ALL".to_string()]),
                    "{who}"
                );
                let res = c.resources.as_ref().expect("resources");
                let req = res.requests.as_ref().expect("requests");
                assert!(
                    req.contains_key("cpu") && req.contains_key("memory"),
                    "{who}"
                );
                assert!(
                    res.limits
                        .as_ref()
                        .is_some_and(|l| l.contains_key("memory")),
                    "{who}: memory limit"
                );
            }
        }
    }
}

#[test]
fn redis_password_reaches_every_redis_client() {
    let objs = built(&pc("  {}"));
    let pw = Some(("demo-redis-auth".to_string(), "password".to_string(), None));
    assert_eq!(
        secret_ref(&server_container(&objs), "PUSH_REDIS_PASSWORD"),
        pw
    );
    for sts in ["StatefulSet/demo-redis", "StatefulSet/demo-sentinel"] {
        let Desired::StatefulSet(s) = find(&objs, sts) else {
            panic!()
        };
        let pod = s.spec.as_ref().unwrap().template.spec.clone().unwrap();
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            assert_eq!(secret_ref(c, "REDIS_PASSWORD"), pw, "{sts} {}", c.name);
        }
        // The readiness probe's redis-cli authenticates from REDISCLI_AUTH.
        assert_eq!(secret_ref(&pod.containers[0], "REDISCLI_AUTH"), pw, "{sts}");
    }
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    let conf = &cm.data.as_ref().unwrap()["redis.conf"];
    assert!(!conf.contains("protected-mode no"), "{conf}");

    // A user Secret with its own key.
    let objs = built(&pc(
        "  redis: {auth: {secretRef: {name: my-redis, key: pass}}}",
    ));
    assert_eq!(
        secret_ref(&server_container(&objs), "PUSH_REDIS_PASSWORD"),
        Some(("my-redis".to_string(), "pass".to_string(), None))
    );

    // Cluster mode: nodes include the auth lines an init container writes,
    // and the init Job's redis-cli authenticates from the environment.
    let objs = built(&pc("  redis: {mode: Cluster}"));
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    assert!(cm.data.as_ref().unwrap()["redis.conf"].contains("include /boot/auth.conf"));
    let c = init_job_container(&objs);
    assert_eq!(secret_ref(c, "REDISCLI_AUTH"), pw);
    assert!(!c
        .command
        .as_ref()
        .unwrap()
        .iter()
        .any(|a| a.contains(" -a ")));

    // Insecure: no password anywhere, and protected mode off so remote
    // clients are not refused.
    let objs = built(&pc("  redis: {auth: {insecure: true}}"));
    assert_eq!(
        secret_ref(&server_container(&objs), "PUSH_REDIS_PASSWORD"),
        None
    );
    let Desired::ConfigMap(cm) = find(&objs, "ConfigMap/demo-redis") else {
        panic!()
    };
    assert!(cm.data.as_ref().unwrap()["redis.conf"].contains("protected-mode no"));
}

#[test]
fn network_policies() {
    let settings = Settings {
        operator_namespace: "ops".into(),
        ..Settings::default()
    };
    let objs = objects::desired(&pc("  {}"), &settings).unwrap();
    let v = find(&objs, "NetworkPolicy/demo-redis").to_json().unwrap();
    let spec = &v["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "demo"
    );
    assert_eq!(
        spec["podSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["redis", "sentinel"])
    );
    let rule = &spec["ingress"][0];
    let ports: Vec<i64> = rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [6379, 16379, 26379]);
    assert_eq!(
        rule["from"][0]["podSelector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "push", "app.kubernetes.io/instance": "demo"})
    );
    assert_eq!(
        rule["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ops"
    );
    assert_eq!(
        rule["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "push-operator"
    );
    assert!(!ids(&objs).contains(&"NetworkPolicy/demo-push".to_string()));

    // The server policy is opt-in; turning the Redis one off makes it obsolete.
    let pc2 = pc("  networkPolicy: {redis: {enabled: false}, server: {enabled: true, from: [{namespaceSelector: {matchLabels: {team: web}}}]}}");
    let objs = built(&pc2);
    assert!(!ids(&objs).contains(&"NetworkPolicy/demo-redis".to_string()));
    let v = find(&objs, "NetworkPolicy/demo-push").to_json().unwrap();
    assert_eq!(
        v["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "web"
    );
    let gone = objects::obsolete(&pc2, &Settings::default()).unwrap();
    assert!(gone
        .iter()
        .any(|o| o.kind == "NetworkPolicy" && o.name == "demo-redis"));
}

#[test]
fn service_exposes_the_metrics_port() {
    let objs = built(&pc("  {}"));
    let Desired::Service(svc) = find(&objs, "Service/demo-push") else {
        panic!()
    };
    let ports: Vec<(String, i32)> = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 80), ("metrics".to_string(), 9090)]
    );
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
    assert_eq!(docs.len(), 14);
    assert!(docs
        .iter()
        .all(|d| d["apiVersion"].is_string() && d["kind"].is_string()));
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "default"));
}
