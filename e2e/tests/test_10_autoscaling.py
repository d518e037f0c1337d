"""10. Autoscaling on push_connections, live: Prometheus scrapes the push
pods, prometheus-adapter serves custom.metrics.k8s.io with the rule the
push-operator chart ships, the HPA scales the Deployment up when connections
open and down when they close, and the operator never writes spec.replicas."""

import json
import time

import jwt
import pytest
import yaml

from clients import WsSubscriber
from conftest import (E2E, OPERATOR_NS, ROOT, apply, delete_namespace, example, helm, kjson, kubectl,
                      new_namespace, secret_data, service_url, wait_ready, wait_until)


@pytest.fixture(scope="module")
def monitoring(operator, image_refs):
    # The chart's own adapter rule, rendered by the chart (not retyped here).
    rendered = helm("template", "push-operator", str(ROOT / "charts" / "push-operator"),
                    "--namespace", OPERATOR_NS, "--set", "prometheusAdapterRules.enabled=true",
                    "--show-only", "templates/prometheus-adapter-rules.yaml")
    rules = yaml.safe_load(rendered)
    # An APIService whose backend is gone blocks every namespace deletion
    # (discovery fails); a run that was killed may have left one.
    kubectl("delete", "apiservice", "v1beta1.custom.metrics.k8s.io", "--ignore-not-found")
    wait_until("an old monitoring namespace gone", 180,
               lambda: not kubectl("get", "namespace", "monitoring", "--ignore-not-found").strip())
    kubectl("create", "namespace", "monitoring")
    apply({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "prometheus-adapter-rules", "namespace": "monitoring"},
           "data": rules["data"]})
    text = (E2E / "manifests" / "monitoring.yaml").read_text()
    text = text.replace("@PROMETHEUS_IMAGE@", image_refs["prometheus"]).replace(
        "@ADAPTER_IMAGE@", image_refs["prometheus-adapter"]).replace("@KUBECTL_IMAGE@", image_refs["kubectl"])
    kubectl("apply", "-f", "-", input=text)
    kubectl("-n", "monitoring", "rollout", "status", "deploy/prometheus", "--timeout=180s")
    kubectl("-n", "monitoring", "rollout", "status", "deploy/prometheus-adapter", "--timeout=180s")
    wait_until("custom.metrics.k8s.io available", 120, lambda: kjson(
        "get", "apiservice", "v1beta1.custom.metrics.k8s.io")["status"]["conditions"][0]["status"] == "True")
    yield
    kubectl("delete", "apiservice", "v1beta1.custom.metrics.k8s.io", "--ignore-not-found")
    kubectl("delete", "namespace", "monitoring", "--wait=false", check=False)


def connections_metric(ns):
    raw = kubectl("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{ns}/pods/*/push_connections")
    return {i["describedObject"]["name"]: float(i["value"].rstrip("m")) / (1000 if i["value"].endswith("m") else 1)
            for i in json.loads(raw)["items"]}


def replicas_owned_by_operator(ns, name):
    d = kjson("-n", ns, "get", "deployment", name, "--show-managed-fields")
    for m in d["metadata"]["managedFields"]:
        if m["manager"] == "push-operator" and "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {}):
            return True
    return False


def test_scales_up_and_down_on_connections(monitoring):
    ns = new_namespace("e2e-hpa")
    try:
        obj = example("minimal", ns)
        obj["metadata"]["name"] = "scaled"
        obj["spec"] = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2,
                                       "targetConnectionsPerPod": 10, "scaleDownStabilizationSeconds": 10},
                       "redis": {"replicas": 1, "sentinel": {"replicas": 1}}}
        apply(obj)
        wait_ready(ns, "scaled")
        deploy = "scaled-push"
        wait_until("one replica", 120, lambda: kjson("-n", ns, "get", "deploy", deploy)["status"].get("readyReplicas") == 1)
        wait_until("the metric served for the pod", 120, lambda: connections_metric(ns))
        svc = service_url(ns, deploy)
        # Auth is on by default: a token signed with the generated Secret's key.
        tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 900, "channels": ["load"]},
                         secret_data(ns, "scaled-auth")["jwtSecret"], algorithm="HS256")
        subs = [WsSubscriber(svc, ["load"], tok).start() for _ in range(30)]
        try:
            for s in subs:
                assert s.connected.wait(30), s.errors
            wait_until("the metric seeing 30 connections", 90, lambda: sum(connections_metric(ns).values()) >= 30)
            wait_until("scaled up to 2", 180,
                       lambda: kjson("-n", ns, "get", "deploy", deploy)["status"].get("readyReplicas") == 2)
            assert not replicas_owned_by_operator(ns, deploy)
        finally:
            for s in subs:
                s.close()
        wait_until("the metric seeing the connections closed", 90,
                   lambda: sum(connections_metric(ns).values()) == 0)
        wait_until("scaled down to 1", 240,
                   lambda: kjson("-n", ns, "get", "deploy", deploy)["spec"]["replicas"] == 1)
        hpa = kjson("-n", ns, "get", "hpa", deploy)
        assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 2
        assert not replicas_owned_by_operator(ns, deploy)
    finally:
        delete_namespace(ns)
