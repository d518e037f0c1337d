"""Fixtures of the end-to-end tests: the cluster of e2e/cluster.sh, kubectl and
helm against it, a namespace per test module, and real WebSocket/SSE clients.

The cluster must be up (`e2e/cluster.sh up`; `make test-e2e` does it).
"""

import json
import os
import pathlib
import subprocess
import time
import uuid

import pytest
import yaml

E2E = pathlib.Path(__file__).resolve().parent.parent
ROOT = E2E.parent
STATE = E2E / ".state"
KUBECONFIG = str(STATE / "kubeconfig")
KUBECTL = str(STATE / "bin" / "kubectl")
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "bin" / "helm"))
OPERATOR_NS = "push-system"
OPERATOR_RELEASE = "push-operator"


class CommandError(Exception):
    def __init__(self, cmd, proc):
        super().__init__(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        self.stderr = proc.stderr
        self.stdout = proc.stdout


def run(cmd, input=None, check=True, timeout=300):
    env = dict(os.environ, KUBECONFIG=KUBECONFIG)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc)
    return proc


def kubectl(*args, input=None, check=True, timeout=300):
    return run([KUBECTL, *args], input=input, check=check, timeout=timeout).stdout


def kjson(*args):
    return json.loads(kubectl(*args, "-o", "json"))


def helm(*args, check=True, timeout=600):
    return run([HELM, *args], check=check, timeout=timeout).stdout


def apply(obj, ns=None, server_side=False):
    docs = obj if isinstance(obj, list) else [obj]
    args = ["apply", "-f", "-"]
    if ns:
        args += ["-n", ns]
    if server_side:
        args += ["--server-side", "--field-manager", "e2e-test"]
    return kubectl(*args, input=yaml.safe_dump_all(docs))


def wait_until(what, timeout, fn, interval=0.5):
    """Polls fn until it returns a truthy value; fails the test after timeout
    with the last value or exception it saw."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - the last error is reported below
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def images():
    out = subprocess.run([str(E2E / "cluster.sh"), "images"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def split_ref(ref):
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def condition(obj, kind):
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c
    return None


def pod_ready(pod):
    c = condition(pod, "Ready")
    return pod["status"].get("phase") == "Running" and c is not None and c["status"] == "True"


def example(name, ns):
    """A PushCluster of docs/examples, moved into the test's namespace."""
    obj = yaml.safe_load((ROOT / "docs" / "examples" / f"{name}.yaml").read_text())
    obj["metadata"]["namespace"] = ns
    return obj


# Every namespace the tests run product pods in enforces Pod Security
# "restricted" (latest), as a platform team would: a pod of the operator or
# of a chart that the policy refuses is never created, and the test fails.
RESTRICTED = {f"pod-security.kubernetes.io/{mode}{suffix}": value
              for mode in ("enforce", "warn", "audit")
              for suffix, value in (("", "restricted"), ("-version", "latest"))}


def namespace_object(ns, labels=None):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {**RESTRICTED, **(labels or {})}}}


def new_namespace(prefix, labels=None):
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "-f", "-", input=yaml.safe_dump(namespace_object(ns, labels)))
    return ns


def delete_namespace(ns):
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def image_refs():
    return images()


@pytest.fixture(scope="session")
def operator(image_refs):
    """The operator chart installed once for the session (test_01 checks it)."""
    repo, tag = split_ref(image_refs["push-operator"])
    apply(namespace_object(OPERATOR_NS))
    # Helm installs a chart's crds/ once and never upgrades them: apply the
    # current CRD first, as an upgrade by hand does (docs/operator.md), so a
    # cluster that ran an older build serves the current schema.
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "e2e-test",
            "-f", str(ROOT / "charts" / "push-operator" / "crds"))
    helm(
        "upgrade", "--install", OPERATOR_RELEASE, str(ROOT / "charts" / "push-operator"),
        "--namespace", OPERATOR_NS,
        "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
        "--set", "replicaCount=2", "--set", "operator.leaseSeconds=10",
        "--wait", "--timeout", "5m",
    )
    return {"namespace": OPERATOR_NS, "release": OPERATOR_RELEASE}


def push_cluster_ready(ns, name, generation=None):
    pc = kjson("-n", ns, "get", "pushcluster", name)
    want = generation or pc["metadata"]["generation"]
    conds = {t: condition(pc, t) for t in ("Ready", "RedisReady", "ServerReady")}
    ok = all(c is not None and c["status"] == "True" for c in conds.values())
    return pc if ok and pc["status"].get("observedGeneration") == want else None


def wait_ready(ns, name, timeout=420):
    return wait_until(f"PushCluster {ns}/{name} Ready", timeout, lambda: push_cluster_ready(ns, name))


def service_url(ns, name, port_name=None):
    svc = kjson("-n", ns, "get", "service", name)
    port = svc["spec"]["ports"][0]["port"]
    if port_name:
        port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name)
    return f"http://{svc['spec']['clusterIP']}:{port}"


# The three example PushClusters, applied once (each in its own namespace)
# and shared by the tests that need a running one: creating Redis is the
# slow part of every test here.
AUTH = {"jwtSecret": "e2e-jwt-secret-0123456789abcdef", "publishKey": "e2e-publish-key"}
REDIS_PASSWORD = "e2e-redis-password-0123456789"


def small_requests(obj):
    """The operator's default requests (and the full example's 1.9 CPUs) do
    not fit three PushClusters on the test node's 2 CPUs: every example gets
    small ones. Sizes are not what these tests are about."""
    spec = obj["spec"]
    redis = spec.setdefault("redis", {})
    spec.setdefault("resources", {}).setdefault("requests", {}).update(cpu="20m", memory="64Mi")
    redis.setdefault("resources", {}).setdefault("requests", {}).update(cpu="20m", memory="128Mi")
    if "limits" in redis["resources"]:
        redis["resources"]["limits"]["memory"] = "512Mi"
    if redis.get("mode") != "Cluster":
        redis.setdefault("sentinel", {}).setdefault("resources", {}).setdefault("requests", {}).update(
            cpu="10m", memory="32Mi")
    return obj


@pytest.fixture(scope="session")
def clusters(operator):
    made, namespaces = {}, []
    try:
        for name in ("minimal", "full", "cluster-mode"):
            ns = new_namespace(f"e2e-{name}")
            namespaces.append(ns)
            obj = example(name, ns)
            if name == "full":
                kubectl("-n", ns, "create", "secret", "generic", "push-auth",
                        *[f"--from-literal={k}={v}" for k, v in AUTH.items()])
                # The example names its Redis password Secret too.
                kubectl("-n", ns, "create", "secret", "generic", "push-redis",
                        f"--from-literal=password={REDIS_PASSWORD}")
            small_requests(obj)
            apply(obj)
            made[name] = {"ns": ns, "name": obj["metadata"]["name"], "spec": obj["spec"]}
        for c in made.values():
            c["status"] = wait_ready(c["ns"], c["name"])
        yield made
    finally:
        for ns in namespaces:
            delete_namespace(ns)


def secret_data(ns, name):
    """A Secret's data, decoded."""
    import base64
    data = kjson("-n", ns, "get", "secret", name).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def psa_check(yaml_text):
    """e2e/build/psa-check (Pod Security restricted, latest) on YAML: (exit code, violations)."""
    binary = subprocess.run([str(E2E / "build" / "psa-check.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
    proc = subprocess.run([binary], input=yaml_text, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr
