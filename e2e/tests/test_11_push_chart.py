"""11. charts/push without the operator: install with the chart's own Redis
and Sentinel, traffic across two pods, `helm upgrade` rolling the pods, and
`helm uninstall` leaving no object of the release behind."""

import time
import urllib.error

import jwt
import pytest
import yaml

from clients import Publisher, SseSubscriber, WsSubscriber
from conftest import (ROOT, delete_namespace, helm, kjson, new_namespace, pod_ready, psa_check, secret_data,
                      service_url, split_ref, wait_until)

RELEASE = "chat"
KINDS = "deployments,statefulsets,services,configmaps,poddisruptionbudgets,horizontalpodautoscalers,pods,secrets"


@pytest.fixture(scope="module")
def release(image_refs):
    ns = new_namespace("e2e-chart")
    repo, tag = split_ref(image_refs["push-server"])
    args = ["--namespace", ns, "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
            "--set", "broker=redis", "--set", "replicaCount=2",
            "--set", "redis.resources.requests.cpu=20m", "--set", "resources.requests.cpu=20m",
            # Redis keeps its data on a PVC of the default StorageClass
            # (local-path-provisioner: folders a non-root Redis can write).
            # Exposure objects, validated by the API server (Gateway API CRDs
            # installed; no Gateway or ingress controller runs here).
            "--set", "ingress.enabled=true", "--set", "ingress.hosts[0].host=chat.e2e.test",
            "--set", "ingress.hosts[0].paths[0].path=/", "--set", "ingress.hosts[0].paths[0].pathType=Prefix",
            "--set", "httpRoute.enabled=true", "--set", "httpRoute.parentRefs[0].name=gw",
            "--set", "httpRoute.hostnames[0]=chat.e2e.test",
            "--wait", "--timeout", "6m"]
    helm("install", RELEASE, str(ROOT / "charts" / "push"), *args)
    yield {"ns": ns, "args": args}
    helm("uninstall", RELEASE, "--namespace", ns, check=False)
    delete_namespace(ns)


def keys(ns):
    """The auth Secret the chart generated (no auth.existingSecret given)."""
    data = secret_data(ns, "chat-push-auth")
    tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 600, "channels": ["room"]},
                     data["jwtSecret"], algorithm="HS256")
    return data["publishKey"], tok


def server_pods(ns):
    pods = kjson("-n", ns, "get", "pods", "-l", "app.kubernetes.io/component=server")["items"]
    return [p for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]


def service_backends(ns, service):
    slices = kjson("-n", ns, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return {e["targetRef"]["name"] for sl in slices for e in sl.get("endpoints") or []}


def test_traffic_across_pods(release):
    ns = release["ns"]
    pods = wait_until("two ready push pods", 120, lambda: server_pods(ns) if len(server_pods(ns)) == 2 else None)
    a, b = (f"http://{p['status']['podIP']}:8080" for p in pods)
    svc = service_url(ns, "chat-push")
    key, tok = keys(ns)
    subs = [WsSubscriber(a, ["room"], tok).start(), SseSubscriber(svc, ["room"], tok).start()]
    try:
        for s in subs:
            assert s.connected.wait(30), s.errors
        with pytest.raises(urllib.error.HTTPError) as e:
            Publisher(svc, "room").publish_one({"n": -1})
        assert e.value.code == 401  # auth is on by default
        for n in range(10):
            Publisher(b if n % 2 else svc, "room", key).publish_one({"n": n})
        for s in subs:
            wait_until("10 delivered", 30, lambda s=s: s.numbers("room") == list(range(10)))
    finally:
        for s in subs:
            s.close()


def test_restricted_admits_the_release_and_redis_persists(release):
    ns = release["ns"]
    pods = kjson("-n", ns, "get", "pods")
    code, out = psa_check(yaml.safe_dump(pods))
    assert code == 0, out
    pvcs = kjson("-n", ns, "get", "pvc")["items"]
    assert pvcs and all(p["status"]["phase"] == "Bound" for p in pvcs), [p["metadata"]["name"] for p in pvcs]
    assert kjson("-n", ns, "get", "ingress")["items"]
    assert kjson("-n", ns, "get", "httproutes.gateway.networking.k8s.io")["items"]
    assert kjson("-n", ns, "get", "networkpolicies")["items"]


def test_upgrade_rolls_the_pods(release):
    ns = release["ns"]
    before = {p["metadata"]["name"] for p in server_pods(ns)}
    helm("upgrade", RELEASE, str(ROOT / "charts" / "push"), *release["args"],
         "--set", "config.heartbeat=20s")
    cm = next(c for c in kjson("-n", ns, "get", "configmaps")["items"] if "config.yaml" in c.get("data", {}))
    assert "heartbeat: 20s" in cm["data"]["config.yaml"]
    wait_until("new pods", 300, lambda: len(server_pods(ns)) == 2 and not ({p["metadata"]["name"] for p in server_pods(ns)} & before))
    # A client of the Service reaches the new pods once the EndpointSlices
    # (and kube-proxy's rules) list only them; until then it may be sent to a
    # pod that has just exited.
    new = {p["metadata"]["name"] for p in server_pods(ns)}
    wait_until("the Service serving only the new pods", 60, lambda: service_backends(ns, "chat-push") == new)
    svc = service_url(ns, "chat-push")
    # kube-proxy applies the new EndpointSlices within its sync period.
    wait_until("a publish through the Service after the upgrade", 30,
               lambda: Publisher(svc, "room", keys(ns)[0]).publish_one({"n": 99}, timeout=2)["channel"] == "room")


def test_uninstall_leaves_nothing(release):
    ns = release["ns"]
    helm("uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "3m")

    def left():
        items = kjson("-n", ns, "get", KINDS)["items"]
        return [f"{i['kind']}/{i['metadata']['name']}" for i in items
                if i["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
                or i["metadata"].get("annotations", {}).get("meta.helm.sh/release-name") == RELEASE]

    wait_until("no object of the release", 120, lambda: left() == [])
    assert RELEASE not in helm("list", "--namespace", ns, "-q").split()
