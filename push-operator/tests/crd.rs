//! The checked-in CRD must be what the types generate.

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
