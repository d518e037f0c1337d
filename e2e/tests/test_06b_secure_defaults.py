"""6b. Secure by default on real pods (issue 13, docs/security.md): every pod
of the examples passes Pod Security restricted in namespaces that enforce
it; auth and a Redis password are generated when the spec names none; a
missing auth Secret fails closed; metrics are not on the public port; the
image is resolved at reconcile and shown in status; the short name; the
monitoring, exposure and NetworkPolicy objects are accepted by the API
server (their CRDs are installed, docs/e2e.md). Runs before test_07, which
deletes the minimal example."""

import subprocess
import time
import urllib.error
import urllib.request

import jwt
import pytest
import yaml

from clients import Publisher, WsSubscriber
from conftest import (OPERATOR_NS, ROOT, apply, delete_namespace, kjson, kubectl, new_namespace, pod_ready,
                      psa_check, secret_data, service_url, wait_ready, wait_until)

VERSION = next(line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines()
               if line.startswith("version = "))


def pods_of(ns, selector):
    return kjson("-n", ns, "get", "pods", "-l", selector)["items"]


def owned_by(obj, kind, name):
    return any(r["kind"] == kind and r["name"] == name for r in obj["metadata"].get("ownerReferences", []))


def test_restricted_namespaces_admit_every_pod(clusters, operator):
    for ns in [c["ns"] for c in clusters.values()] + [OPERATOR_NS]:
        labels = kjson("get", "namespace", ns)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", ns
        pods = kjson("-n", ns, "get", "pods")
        assert pods["items"], f"no pod in {ns}"
        # The pods the API server admitted also pass the checks offline...
        code, out = psa_check(yaml.safe_dump(pods))
        assert code == 0, f"{ns}: {out}"
        # ...and no controller was refused a pod by the namespace's policy.
        events = kjson("-n", ns, "get", "events", "--field-selector", "reason=FailedCreate")["items"]
        refused = [e["message"] for e in events if "PodSecurity" in e["message"]]
        assert refused == [], refused
        for p in pods["items"]:
            if p["metadata"].get("ownerReferences", [{}])[0].get("kind") == "Job":
                assert p["status"]["phase"] == "Succeeded", p["metadata"]["name"]
            else:
                assert pod_ready(p), p["metadata"]["name"]
            sc = p["spec"].get("securityContext", {})
            for ctr in p["spec"]["containers"] + p["spec"].get("initContainers", []):
                uid = ctr.get("securityContext", {}).get("runAsUser", sc.get("runAsUser"))
                assert uid not in (None, 0), f"{p['metadata']['name']}/{ctr['name']} has no fixed non-root UID"
                assert ctr.get("resources", {}).get("requests"), f"{p['metadata']['name']}/{ctr['name']}: no requests"


def test_generated_auth_secret_is_enforced(clusters):
    c = clusters["minimal"]  # spec: {} — no auth named
    name, ns = c["name"], c["ns"]
    secret = kjson("-n", ns, "get", "secret", f"{name}-auth")
    assert owned_by(secret, "PushCluster", name)
    data = secret_data(ns, f"{name}-auth")
    assert len(data["jwtSecret"]) >= 32 and len(data["publishKey"]) >= 32, sorted(data)
    svc = service_url(ns, f"{name}-push")
    with pytest.raises(urllib.error.HTTPError) as e:
        Publisher(svc, "e2e:auth").publish_one({"n": 0})
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        Publisher(svc, "e2e:auth", "not-the-key").publish_one({"n": 0})
    assert e.value.code == 401
    tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 600, "channels": ["e2e:*"]},
                     data["jwtSecret"], algorithm="HS256")
    sub = WsSubscriber(svc, ["e2e:auth"], tok).start()
    try:
        assert sub.connected.wait(30), sub.errors
        Publisher(svc, "e2e:auth", data["publishKey"]).publish_one({"n": 1})
        wait_until("the publish with the generated key delivered", 30, lambda: sub.numbers("e2e:auth") == [1])
    finally:
        sub.close()


def redis_cli(ip, port, *args, password=None):
    env = {"PATH": "/usr/bin:/bin"}
    if password:
        env["REDISCLI_AUTH"] = password
    return subprocess.run(["redis-cli", "-h", ip, "-p", str(port), *args], capture_output=True, text=True,
                          env=env, timeout=10).stdout.strip()


def test_redis_and_sentinel_refuse_clients_without_the_password(clusters):
    c = clusters["minimal"]
    name, ns = c["name"], c["ns"]
    secret = kjson("-n", ns, "get", "secret", f"{name}-redis-auth")
    assert owned_by(secret, "PushCluster", name)
    password = secret_data(ns, f"{name}-redis-auth")["password"]
    redis = [p for p in pods_of(ns, f"app.kubernetes.io/instance={name}") if p["metadata"]["name"].startswith(f"{name}-redis-")]
    sentinels = [p for p in pods_of(ns, f"app.kubernetes.io/instance={name}") if p["metadata"]["name"].startswith(f"{name}-sentinel")]
    assert redis and sentinels
    for p in redis:
        ip = p["status"]["podIP"]
        assert redis_cli(ip, 6379, "ping").startswith("NOAUTH"), p["metadata"]["name"]
        assert redis_cli(ip, 6379, "publish", "x", "y").startswith("NOAUTH")
        assert redis_cli(ip, 6379, "ping", password=password) == "PONG"
    for p in sentinels:
        ip = p["status"]["podIP"]
        assert redis_cli(ip, 26379, "ping").startswith("NOAUTH"), p["metadata"]["name"]
        assert redis_cli(ip, 26379, "ping", password=password) == "PONG"
    # Redis runs as its image's user, never root.
    for p in redis + sentinels:
        uids = {ctr.get("securityContext", {}).get("runAsUser", p["spec"].get("securityContext", {}).get("runAsUser"))
                for ctr in p["spec"]["containers"]}
        assert uids == {999}, (p["metadata"]["name"], uids)


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_metrics_only_on_the_metrics_port(clusters):
    c = clusters["minimal"]
    pod = next(p for p in pods_of(c["ns"], f"app.kubernetes.io/component=server,app.kubernetes.io/instance={c['name']}")
               if pod_ready(p))
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    ip = pod["status"]["podIP"]
    assert http_status(f"http://{ip}:8080/metrics")[0] == 404
    code, body = http_status(f"http://{ip}:9090/metrics")
    assert code == 200
    for metric in ("push_build_info", "process_open_fds", "process_resident_memory_bytes", "push_connections"):
        assert metric in body, metric


def test_short_name_and_resolved_image(clusters):
    names = kubectl("get", "pushc", "-A", "-o", "name").split()
    for c in clusters.values():
        assert f"pushcluster.push.dev/{c['name']}" in names
    assert "pushc" in kubectl("api-resources", "--api-group", "push.dev")
    c = clusters["minimal"]
    pc = kjson("-n", c["ns"], "get", "pushcluster", c["name"])
    assert "image" not in pc["spec"] and "image" not in pc["spec"].get("redis", {})  # nothing frozen in
    assert pc["status"]["image"] == f"ghcr.io/push-dev/push-server:{VERSION}"
    assert pc["status"]["redisImage"] == "docker.io/library/redis:7.4"
    deploy = kjson("-n", c["ns"], "get", "deployment", f"{c['name']}-push")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == pc["status"]["image"]
    full = clusters["full"]
    assert kjson("-n", full["ns"], "get", "pushcluster", full["name"])["status"]["image"] == full["spec"]["image"]


def test_monitoring_and_network_policy_objects(clusters):
    c = clusters["minimal"]
    for kind in ("podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com", "networkpolicies"):
        objs = [o for o in kjson("-n", c["ns"], "get", kind)["items"] if owned_by(o, "PushCluster", c["name"])]
        assert objs, f"no {kind} of {c['name']}"
    rule = next(o for o in kjson("-n", c["ns"], "get", "prometheusrules")["items"])
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 4, alerts
    mon = next(o for o in kjson("-n", c["ns"], "get", "podmonitors")["items"])
    assert [e["port"] for e in mon["spec"]["podMetricsEndpoints"]] == ["metrics"]
    np = kjson("-n", c["ns"], "get", "networkpolicy", f"{c['name']}-redis")
    ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule.get("ports", [])}
    assert {6379, 26379} <= ports, ports


@pytest.fixture(scope="module")
def locked(operator):
    """A PushCluster whose auth.secretRef names a Secret that does not exist yet."""
    ns = new_namespace("e2e-locked")
    obj = {"apiVersion": "push.dev/v1alpha1", "kind": "PushCluster", "metadata": {"name": "locked", "namespace": ns},
           "spec": {"autoscaling": {"enabled": False}, "replicas": 1,
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                    "auth": {"secretRef": {"name": "locked-keys"}},
                    "expose": {"ingress": {"enabled": True, "hosts": ["push.e2e.test"]},
                               "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}],
                                             "hostnames": ["push.e2e.test"]}},
                    "redis": {"replicas": 0, "sentinel": {"replicas": 1},
                              "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                              "storage": {"size": "64Mi"}}}}
    apply(obj)
    yield {"ns": ns, "name": "locked"}
    delete_namespace(ns)


def test_missing_auth_secret_fails_closed(locked):
    ns, name = locked["ns"], locked["name"]

    def refused():
        pc = kjson("-n", ns, "get", "pushcluster", name)
        ready = next((x for x in pc.get("status", {}).get("conditions", []) if x["type"] == "Ready"), None)
        return ready if ready and ready["status"] == "False" and ready["reason"] == "AuthSecretMissing" else None

    cond = wait_until("Ready=False AuthSecretMissing", 120, refused)
    assert "locked-keys" in cond["message"]
    events = kjson("-n", ns, "get", "events", "--field-selector",
                   f"involvedObject.kind=PushCluster,involvedObject.name={name}")["items"]
    assert any(e["type"] == "Warning" and e["reason"] == "AuthSecretMissing" for e in events), \
        [(e["type"], e["reason"]) for e in events]
    # Some seconds later still nothing that would serve without auth.
    assert kubectl("-n", ns, "get", "deployment", f"{name}-push", "--ignore-not-found").strip() == ""
    assert pods_of(ns, "app.kubernetes.io/component=server") == []


def test_creating_the_secret_makes_it_ready(locked):
    ns, name = locked["ns"], locked["name"]
    kubectl("-n", ns, "create", "secret", "generic", "locked-keys", "--from-literal=publishKey=e2e-locked-key")
    wait_ready(ns, name, timeout=300)
    svc = service_url(ns, f"{name}-push")
    assert Publisher(svc, "e2e:locked", "e2e-locked-key").publish_one({"n": 1})["channel"] == "e2e:locked"
    with pytest.raises(urllib.error.HTTPError) as e:
        Publisher(svc, "e2e:locked").publish_one({"n": 2})
    assert e.value.code == 401


def test_expose_objects_accepted(locked):
    ns, name = locked["ns"], locked["name"]
    svc_port = next(p for p in kjson("-n", ns, "get", "service", f"{name}-push")["spec"]["ports"] if p["name"] == "http")
    ing = kjson("-n", ns, "get", "ingress", f"{name}-push")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == f"{name}-push"
    assert backend["port"] in ({"name": "http"}, {"number": svc_port["port"]}), backend
    route = kjson("-n", ns, "get", "httproutes.gateway.networking.k8s.io", f"{name}-push")
    assert route["spec"]["hostnames"] == ["push.e2e.test"]
    assert route["spec"]["parentRefs"][0]["name"] == "gw"
    ref = route["spec"]["rules"][0]["backendRefs"][0]
    assert ref["name"] == f"{name}-push" and ref["port"] == svc_port["port"]  # a Service port, not the pod's
