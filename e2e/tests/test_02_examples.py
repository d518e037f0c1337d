"""2. The example PushClusters applied with kubectl: every object of
docs/operator.md exists, is owned by its PushCluster and applied by field
manager push-operator; Ready, RedisReady and ServerReady are True at the
current generation; `kubectl get pushclusters` shows the printer columns."""

import pytest

from conftest import kjson, kubectl

REPLICATION = [
    ("configmap", "{}-redis"), ("service", "{}-redis-headless"), ("service", "{}-redis-master"),
    ("statefulset", "{}-redis"), ("poddisruptionbudget", "{}-redis"),
    ("service", "{}-sentinel"), ("statefulset", "{}-sentinel"), ("poddisruptionbudget", "{}-sentinel"),
]
SERVER = [
    ("configmap", "{}-push"), ("deployment", "{}-push"), ("service", "{}-push"),
    ("poddisruptionbudget", "{}-push"), ("horizontalpodautoscaler", "{}-push"),
]
CLUSTER = [
    ("configmap", "{}-redis"), ("service", "{}-redis-headless"), ("statefulset", "{}-redis"),
    ("poddisruptionbudget", "{}-redis"), ("job", "{}-redis-cluster-init-3x2"),
]


def expected(example):
    return (CLUSTER if example == "cluster-mode" else REPLICATION) + SERVER


@pytest.mark.parametrize("example", ["minimal", "full", "cluster-mode"])
def test_objects_owned_and_applied_by_the_operator(clusters, example):
    c = clusters[example]
    pc = kjson("-n", c["ns"], "get", "pushcluster", c["name"])
    for kind, pattern in expected(example):
        name = pattern.format(c["name"])
        obj = kjson("-n", c["ns"], "get", kind, name, "--show-managed-fields")
        owners = obj["metadata"].get("ownerReferences", [])
        assert any(o["uid"] == pc["metadata"]["uid"] and o.get("controller") for o in owners), \
            f"{kind}/{name} is not controlled by the PushCluster: {owners}"
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"].get("managedFields", [])}
        assert ("push-operator", "Apply") in managers, f"{kind}/{name} managers: {managers}"


def test_cluster_mode_has_no_sentinel(clusters):
    c = clusters["cluster-mode"]
    out = kubectl("-n", c["ns"], "get", "statefulset,service", "-o", "name")
    assert f"statefulset.apps/{c['name']}-sentinel" not in out
    assert f"service/{c['name']}-redis-master" not in out


@pytest.mark.parametrize("example", ["minimal", "full", "cluster-mode"])
def test_conditions_true_at_observed_generation(clusters, example):
    c = clusters[example]
    pc = kjson("-n", c["ns"], "get", "pushcluster", c["name"])
    assert pc["status"]["observedGeneration"] == pc["metadata"]["generation"]
    conds = {x["type"]: x for x in pc["status"]["conditions"]}
    for t in ("Ready", "RedisReady", "ServerReady"):
        assert conds[t]["status"] == "True", conds[t]
    assert pc["status"]["readyReplicas"] >= 2


def test_printer_columns(clusters):
    c = clusters["full"]
    header, row = kubectl("-n", c["ns"], "get", "pushclusters", "-o", "wide").splitlines()[:2]
    for col in ("NAME", "READY", "REPLICAS", "CONNECTIONS TARGET", "MASTER", "AGE"):
        assert col in header, header
    cells = row.split()
    assert cells[0] == c["name"] and cells[1] == "True", row
    master = kjson("-n", c["ns"], "get", "pushcluster", c["name"])["status"]["redis"]["master"]
    assert master in cells, row
