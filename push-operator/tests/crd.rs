//! The checked-in CRD must be what the types generate.

use serde_json::json;
use std::path::Path;

#[test]
fn checked_in_crd_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/pushcluster.yaml");
    let generated = push_operator::crd::crd_yaml().unwrap();
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "crds/pushcluster.yaml is stale: run `cargo run -p push-operator -- crd > crds/pushcluster.yaml`"
    );
}

#[test]
fn crd_names_printer_columns_and_subresources() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&push_operator::crd::crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["metadata"]["name"], "pushclusters.push.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["pushc"]),
        "pc is PriorityClass"
    );
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Ready", "Replicas", "Connections target", "Age"] {
        assert!(cols.contains(&want), "{want} column");
    }
    assert!(v["subresources"]["status"].is_object());
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["minimum"], 1.0);
    assert_eq!(
        spec["autoscaling"]["x-kubernetes-validations"][0]["rule"],
        "self.minReplicas <= self.maxReplicas"
    );
    assert_eq!(
        spec["redis"]["properties"]["mode"]["enum"],
        serde_json::json!(["Replication", "Cluster"])
    );
    assert_eq!(spec["server"]["properties"]["heartbeat"]["default"], "25s");
}

/// push-config's start-up checks that are not about a `spec.server` field,
/// and what enforces them instead.
const OPERATOR_ENFORCED: [(&str, &str); 2] = [
    // The operator writes listen 0.0.0.0:8080 and metrics_listen 0.0.0.0:9090.
    (
        "metrics_listen",
        "set by the operator, never equal to listen",
    ),
    // PUSH_REQUIRE_AUTH with a Secret checked for keys (AuthSecretMissing).
    ("require_auth", "the controller's auth Secret check"),
];

fn server_schema() -> serde_json::Value {
    let crd: serde_json::Value =
        serde_yaml::from_str(&push_operator::crd::crd_yaml().unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["server"]
        .clone()
}

#[test]
fn every_start_up_check_has_a_cel_rule() {
    let server = server_schema();
    let rules = server["x-kubernetes-validations"].as_array().unwrap();
    for check in push_config::CHECKS {
        if let Some((_, why)) = OPERATOR_ENFORCED
            .iter()
            .find(|(k, _)| *k == check.setting.key)
        {
            assert!(
                check.setting.crd_field.is_none(),
                "{}: {why}",
                check.setting.key
            );
            continue;
        }
        let field = check.setting.crd_field.unwrap_or_else(|| {
            panic!(
                "check on {} has no CRD field and no rule",
                check.setting.key
            )
        });
        let message = format!("spec.server.{field}: {}", check.error());
        assert!(
            rules.iter().any(|r| r["message"] == message.as_str()
                && r["rule"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("self.{field}"))),
            "no CEL rule for {message}"
        );
    }
    assert!(
        rules.iter().all(|r| r["rule"] != "true"),
        "a placeholder rule"
    );
}

#[test]
fn every_crd_server_field_is_a_push_config_setting() {
    let server = server_schema();
    let props = server["properties"].as_object().unwrap();
    for (field, schema) in props {
        let setting = push_config::by_crd_field(field)
            .unwrap_or_else(|| panic!("spec.server.{field} is not a push-config setting"));
        match setting.kind {
            push_config::Kind::Duration => {
                assert_eq!(schema["pattern"], push_config::DURATION_PATTERN, "{field}")
            }
            push_config::Kind::OffDuration => {
                assert_eq!(
                    schema["pattern"],
                    push_config::OFF_DURATION_PATTERN,
                    "{field}"
                )
            }
            _ => {}
        }
    }
    // And every setting push-config offers to the CRD is there.
    for s in push_config::SETTINGS {
        if let Some(field) = s.crd_field {
            assert!(
                props.contains_key(field),
                "push-config's {field} is missing from spec.server"
            );
        }
    }
}

#[test]
fn cel_rules_refuse_what_the_server_refuses() {
    use push_operator::crd::ServerSettings;
    let ok = serde_json::to_value(ServerSettings::default()).unwrap();
    assert!(ServerSettings::validate_cel(&ok, None).is_ok());
    for (field, value, needle) in [
        ("idleTimeout", json!("20s"), "longer than heartbeat"),
        ("heartbeat", json!("0s"), "above 0"),
        ("sseHeartbeat", json!("0ms"), "above 0"),
        ("writeDelay", json!("2s"), "at most 1s"),
        ("ackWindow", json!(0), "at least 1"),
    ] {
        let mut bad = ok.clone();
        bad[field] = value;
        let err = ServerSettings::validate_cel(&bad, None).expect_err(field);
        assert!(format!("{err:?}").contains(needle), "{field}: {err:?}");
        // The operator's own re-check agrees (render, old CRDs).
        let spec: ServerSettings = serde_json::from_value(bad).unwrap();
        let problems = push_operator::crd::server_problems(&spec);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{field}: {problems:?}"
        );
    }
    let mut fine = ok.clone();
    fine["writeDelay"] = json!("off");
    fine["idleTimeout"] = json!("1m");
    assert!(ServerSettings::validate_cel(&fine, None).is_ok());
}
