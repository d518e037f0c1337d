"""6. Admission by the real API server: the CRD's CEL rules refuse a spec
with minReplicas > maxReplicas and a change of redis.mode, with the message a
user sees."""

import yaml

from conftest import CommandError, example, kubectl


def apply_error(obj):
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
    except CommandError as e:
        return e.stderr
    return None


def test_min_above_max_refused(clusters):
    ns = clusters["minimal"]["ns"]
    obj = example("minimal", ns)
    obj["metadata"]["name"] = "bad-scaling"
    obj["spec"] = {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}
    err = apply_error(obj)
    assert err is not None, "the API server accepted minReplicas > maxReplicas"
    assert "minReplicas must not exceed maxReplicas" in err, err


def test_redis_mode_change_refused(clusters):
    c = clusters["minimal"]
    obj = example("minimal", c["ns"])
    obj["spec"] = {"redis": {"mode": "Cluster"}}
    err = apply_error(obj)
    assert err is not None, "the API server accepted a change of redis.mode"
    assert "redis.mode cannot be changed" in err, err
    mode = kubectl("-n", c["ns"], "get", "pushcluster", c["name"], "-o", "jsonpath={.spec.redis.mode}")
    assert mode == "Replication"
