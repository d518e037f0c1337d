"""Invariants of rendered chart output that schemas cannot express.

Usage: check_rendered.py CHART RENDERED.yaml

Checks, for every pod template of both charts: Pod Security "restricted"
settings (runAsNonRoot, seccomp RuntimeDefault, no privilege escalation, all
capabilities dropped; psa-check in run.sh is the authoritative check), a
read-only root filesystem and CPU and memory requests on every container.
For the push chart: auth fails closed (PUSH_REQUIRE_AUTH with every auth
key; none of them only when EXPECT_AUTH=off), the generated Secrets hold the
keys the pods reference, the Redis password reaches every Redis/Sentinel
container (REDIS_PASSWORD, REDISCLI_AUTH) and push-server
(PUSH_REDIS_PASSWORD) unless EXPECT_REDIS_AUTH=off, /metrics on its own
port (metrics_listen 0.0.0.0:9090, port `metrics`, a ClusterIP Service
apart from the public one), NetworkPolicies that select this release's pods
and name ports those pods have, probes on /healthz and /readyz,
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


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_containers(name, spec):
    """Beyond PSA restricted: what docs/kubernetes.md promises every pod."""
    for c in spec.get("initContainers", []) + spec["containers"]:
        where = f"{name}/{c['name']}"
        if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            fail(f"{where}: readOnlyRootFilesystem is not true")
        req = c.get("resources", {}).get("requests", {})
        if not req.get("cpu") or not req.get("memory"):
            fail(f"{where}: no cpu and memory requests (BestEffort pods are evicted first)")


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


def secret_ref(env, name):
    ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
    return ref


def check_rendered_secret(ref, secrets, what):
    """A reference to a Secret the chart renders names a key it holds."""
    sec = secrets.get(ref["name"])
    if sec is not None and ref["key"] not in sec.get("data", {}):
        fail(f"{what}: Secret {ref['name']} has no key {ref['key']}")
    if sec is not None and ref.get("optional"):
        fail(f"{what}: the chart's own Secret {ref['name']} is referenced optional")


def check_auth(server, secrets):
    env = env_of(server)
    keys = [k for k in ("PUSH_JWT_SECRET", "PUSH_PUBLISH_KEY", "PUSH_JWT_PUBLIC_KEY") if k in env]
    if os.environ.get("EXPECT_AUTH") == "off":
        if keys or "PUSH_REQUIRE_AUTH" in env:
            fail(f"auth.insecure: push-server still gets {keys + ['PUSH_REQUIRE_AUTH']}")
        return
    if env.get("PUSH_REQUIRE_AUTH", {}).get("value") != "true":
        fail("push-server may start without auth: PUSH_REQUIRE_AUTH is not \"true\"")
    if not keys:
        fail("push-server gets no auth key (PUSH_JWT_SECRET, PUSH_PUBLISH_KEY, PUSH_JWT_PUBLIC_KEY)")
    for k in ("PUSH_JWT_SECRET", "PUSH_PUBLISH_KEY"):
        ref = secret_ref(env, k)
        if k in env and not ref:
            fail(f"{k} is not read from a Secret")
        if ref:
            check_rendered_secret(ref, secrets, k)


def check_redis_auth(server, by_kind, secrets):
    env = env_of(server)
    redis_sets = [s for s in by_kind.get("StatefulSet", [])
                  if s["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]
    off = os.environ.get("EXPECT_REDIS_AUTH") == "off"
    for sts in redis_sets:
        spec = sts["spec"]["template"]["spec"]
        refs = set()
        for c in spec.get("initContainers", []) + spec["containers"]:
            cenv = env_of(c)
            for var in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
                ref = secret_ref(cenv, var)
                if off:
                    if var in cenv:
                        fail(f"redis.auth.insecure: {c['name']} still gets {var}")
                    continue
                if not ref:
                    fail(f"StatefulSet {sts['metadata']['name']}/{c['name']}: no {var} from a Secret")
                check_rendered_secret(ref, secrets, f"{c['name']} {var}")
                refs.add((ref["name"], ref["key"]))
        # The boot script decides the master from the data it finds
        # (DATA_DIR, default /data): it must see the volume Redis writes.
        redis_c = next(c for c in spec["containers"] if c["name"] == "redis")
        data_vol = {m["mountPath"]: m["name"] for m in redis_c["volumeMounts"]}.get("/data")
        for init in spec.get("initContainers", []):
            data_dir = env_of(init).get("DATA_DIR", {}).get("value", "/data")
            if {m["mountPath"]: m["name"] for m in init.get("volumeMounts", [])}.get(data_dir) != data_vol:
                fail(f"StatefulSet {sts['metadata']['name']}/{init['name']}: {data_dir} is not Redis' data volume")
        server_ref = secret_ref(env, "PUSH_REDIS_PASSWORD")
        if off:
            if "PUSH_REDIS_PASSWORD" in env:
                fail("redis.auth.insecure: push-server still gets PUSH_REDIS_PASSWORD")
            continue
        if not server_ref or {(server_ref["name"], server_ref["key"])} != refs:
            fail(f"push-server's PUSH_REDIS_PASSWORD {server_ref} is not the Redis password {refs}")
        for probe in ("readinessProbe", "livenessProbe"):
            for c in spec["containers"]:
                cmd = c.get(probe, {}).get("exec", {}).get("command", [])
                if any(a in ("-a", "--pass", "--user") for a in cmd):
                    fail(f"{c['name']} {probe} puts the password on the command line: {cmd}")


def check_metrics(config, server, dep, by_kind):
    if config.get("metrics_listen") != "0.0.0.0:9090":
        fail(f"config.yaml metrics_listen is {config.get('metrics_listen')!r}, not 0.0.0.0:9090")
    ports = {p["name"]: p["containerPort"] for p in server.get("ports", [])}
    if ports.get("metrics") != 9090 or ports.get("http") != 8080:
        fail(f"push-server container ports {ports}: want http 8080 and metrics 9090")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in ann and ann["prometheus.io/port"] != "9090":
        fail(f"prometheus.io/port annotation {ann['prometheus.io/port']} is not the metrics port")
    sel = dep["spec"]["selector"]["matchLabels"]
    server_svcs = [s for s in by_kind.get("Service", []) if s["spec"].get("selector") == sel]
    metric_svcs = [s for s in server_svcs if any(p.get("targetPort") == "metrics" for p in s["spec"]["ports"])]
    if len(metric_svcs) != 1 or metric_svcs[0]["spec"]["type"] != "ClusterIP":
        fail("want exactly one ClusterIP Service for the metrics port")
    for s in server_svcs:
        names = {p.get("targetPort") for p in s["spec"]["ports"]}
        if "metrics" in names and names != {"metrics"}:
            fail(f"Service {s['metadata']['name']} mixes the metrics port with {names - {'metrics'}}")
    for sm in by_kind.get("ServiceMonitor", []):
        if [ep["port"] for ep in sm["spec"]["endpoints"]] != ["metrics"]:
            fail("ServiceMonitor does not scrape the metrics port")


def pod_labels(by_kind):
    """(labels, container port names) of every pod template."""
    for kind in ("Deployment", "StatefulSet"):
        for d in by_kind.get(kind, []):
            t = d["spec"]["template"]
            ports = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
            yield t["metadata"]["labels"], ports


def selects(selector, labels):
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def check_network_policies(by_kind):
    pods = list(pod_labels(by_kind))
    redis_sts = [s for s in by_kind.get("StatefulSet", [])
                 if s["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]
    nps = by_kind.get("NetworkPolicy", [])
    for np in nps:
        sel = np["spec"]["podSelector"]
        targets = [(l, p) for l, p in pods if selects(sel, l)]
        if len(targets) != 1 or not sel.get("matchLabels"):
            fail(f"NetworkPolicy {np['metadata']['name']} selects {len(targets)} pod templates, want 1")
        _, ports = targets[0]
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p["port"] not in ports:
                    fail(f"NetworkPolicy {np['metadata']['name']} opens port {p['port']}, not a port of its pods {ports}")
    for sts in redis_sts:
        labels = sts["spec"]["template"]["metadata"]["labels"]
        guarding = [np for np in nps if selects(np["spec"]["podSelector"], labels)]
        if os.environ.get("EXPECT_REDIS_POLICY") == "off":
            if guarding:
                fail("networkPolicy.redis.enabled: false still renders the Redis NetworkPolicy")
            continue
        if not guarding:
            fail("no NetworkPolicy guards the chart's Redis")
        for rule in guarding[0]["spec"]["ingress"]:
            peers = rule.get("from")
            if not peers:
                fail("the Redis NetworkPolicy admits every source")
            # The release's push pods and Redis pods are let in; no peer
            # selects every pod (an empty podSelector) or every address.
            for peer in peers:
                if peer.get("podSelector") == {} or peer.get("namespaceSelector") == {} \
                        or peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
                    fail(f"the Redis NetworkPolicy admits everything through {peer}")
            for labels, _ in pods:
                if not any(set(peer) == {"podSelector"} and selects(peer["podSelector"], labels) for peer in peers):
                    fail(f"the Redis NetworkPolicy shuts out the release's pods {labels}")


def check_exposure(by_kind):
    svc_ports = {(s["metadata"]["name"], p["name"]) for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
    svc_port_numbers = {(s["metadata"]["name"], p["port"]) for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                if (b["name"], b["port"].get("name")) not in svc_ports or b["port"].get("name") != "http":
                    fail(f"Ingress backend {b} is not the http port of the push Service")
    for route in by_kind.get("HTTPRoute", []):
        spec = route["spec"]
        if not spec.get("parentRefs"):
            fail("HTTPRoute without parentRefs")
        for rule in spec["rules"]:
            for b in rule["backendRefs"]:
                if (b["name"], b["port"]) not in svc_port_numbers:
                    fail(f"HTTPRoute backend {b} is not a Service port")
                if (b["name"], "metrics") in svc_ports:
                    fail("HTTPRoute points at the metrics Service")


def main():
    chart, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        for spec in pod_specs(d):
            check_restricted(f"{d['kind']}/{d['metadata']['name']}", spec)
            check_containers(f"{d['kind']}/{d['metadata']['name']}", spec)

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
        secrets = {x["metadata"]["name"]: x for x in by_kind.get("Secret", [])}
        check_auth(server, secrets)
        check_redis_auth(server, by_kind, secrets)
        check_metrics(config, server, dep, by_kind)
        check_network_policies(by_kind)
        check_exposure(by_kind)
        out = os.environ.get("CONFIG_OUT")
        if out:
            with open(out, "w") as f:
                f.write(cms[0]["data"]["config.yaml"])
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    print(f"ok   invariants ({kinds})")


main()
