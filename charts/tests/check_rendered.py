"""Invariants of rendered chart output that schemas cannot express.

Usage: check_rendered.py CHART RENDERED.yaml

Checks, for every pod template: Pod Security "restricted" settings
(runAsNonRoot, seccomp RuntimeDefault, no privilege escalation, all
capabilities dropped). For the push chart: probes on /healthz and /readyz,
terminationGracePeriodSeconds above the drain_period of the ConfigMap, an
HPA (when present) on the Pods metric push_connections that targets the
Deployment, or else a KEDA ScaledObject (no Kubernetes schema) with a
Prometheus trigger on push_connections, never both, and the ConfigMap's config.yaml written to CONFIG_OUT for the
real-server check. ServiceMonitors (no Kubernetes schema to validate them
against) are checked for the fields prometheus-operator needs.
"""
import os
import re
import sys

import yaml


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def pod_specs(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield doc["spec"]["template"]["spec"]


def seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    if not m:
        fail(f"drain_period {text!r} is not whole seconds")
    return int(m.group(1))


def check_restricted(name, spec):
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(f"{name}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{name}: pod seccompProfile is not RuntimeDefault")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{name}/{c['name']}: allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{name}/{c['name']}: capabilities.drop is not [ALL]")
        if sc.get("privileged"):
            fail(f"{name}/{c['name']}: privileged")


def main():
    chart, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        for spec in pod_specs(d):
            check_restricted(f"{d['kind']}/{d['metadata']['name']}", spec)

    for sm in by_kind.get("ServiceMonitor", []):
        spec = sm["spec"]
        if not spec.get("selector", {}).get("matchLabels"):
            fail("ServiceMonitor without selector.matchLabels")
        for ep in spec["endpoints"]:
            if not ep.get("port") or ep.get("path") != "/metrics":
                fail("ServiceMonitor endpoint without a named port or /metrics path")
        selected = spec["selector"]["matchLabels"]
        ports = [p["name"] for s in by_kind.get("Service", [])
                 if selected.items() <= s["metadata"]["labels"].items()
                 for p in s["spec"]["ports"]]
        for ep in spec["endpoints"]:
            if ep["port"] not in ports:
                fail(f"ServiceMonitor port {ep['port']} is not a port of a selected Service {ports}")

    if chart == "push":
        deploys = [d for d in by_kind["Deployment"]]
        if len(deploys) != 1:
            fail("push chart must render one Deployment")
        dep = deploys[0]
        spec = dep["spec"]["template"]["spec"]
        server = spec["containers"][0]
        if server["livenessProbe"]["httpGet"]["path"] != "/healthz":
            fail("liveness probe is not /healthz")
        if server["readinessProbe"]["httpGet"]["path"] != "/readyz":
            fail("readiness probe is not /readyz")
        cms = [c for c in by_kind["ConfigMap"] if "config.yaml" in c.get("data", {})
               and c["metadata"]["name"] == dep["metadata"]["name"]]
        config = yaml.safe_load(cms[0]["data"]["config.yaml"])
        drain = seconds(config["drain_period"])
        if spec["terminationGracePeriodSeconds"] <= drain:
            fail(f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} <= drain {drain}")
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
                fail("HPA does not target the push Deployment")
            metrics = hpa["spec"]["metrics"]
            if [(m["type"], m["pods"]["metric"]["name"]) for m in metrics] != [("Pods", "push_connections")]:
                fail(f"HPA metrics are not the Pods metric push_connections: {metrics}")
            if "replicas" in dep["spec"]:
                fail("Deployment sets replicas although an HPA owns them")
        for so in by_kind.get("ScaledObject", []):
            if by_kind.get("HorizontalPodAutoscaler"):
                fail("both a KEDA ScaledObject and an HPA scale the Deployment")
            spec = so["spec"]
            if spec["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
                fail("ScaledObject does not target the push Deployment")
            if spec["minReplicaCount"] > spec["maxReplicaCount"]:
                fail("ScaledObject minReplicaCount > maxReplicaCount")
            for t in spec["triggers"]:
                md = t["metadata"]
                if t["type"] != "prometheus" or "push_connections" not in md["query"]:
                    fail(f"ScaledObject trigger is not a Prometheus query on push_connections: {t}")
                if not md["serverAddress"].startswith("http") or not md["threshold"].isdigit():
                    fail(f"ScaledObject trigger metadata incomplete: {md}")
            if "replicas" in dep["spec"]:
                fail("Deployment sets replicas although KEDA owns them")
        out = os.environ.get("CONFIG_OUT")
        if out:
            with open(out, "w") as f:
                f.write(cms[0]["data"]["config.yaml"])
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    print(f"ok   invariants ({kinds})")


main()
