#!/usr/bin/env bash
# Checks of spec.template / spec.expose / spec.monitoring output (called by
# validate-schemas.sh):
#  1. `push-operator render` of tests/fixtures/optional.yaml: the built-in
#     kinds (pods with every template override, Ingress) validate against the
#     Kubernetes schemas (--strict);
#  2. the HTTPRoute, PodMonitor and PrometheusRule validate against the
#     Gateway API v1.6.3 and Prometheus Operator v0.89.0 CRD schemas, read from
#     the Go module cache the e2e cluster fills (skipped when absent);
#  3. the pods with every template override pass Pod Security restricted;
#  4. the PrometheusRule's groups pass `promtool check rules`
#     (Debian package `prometheus`).
# Usage: validate-optional.sh PUSH_OPERATOR_BINARY VENV_DIR K8S_VERSION
set -euo pipefail
bin=$1
venv=$2
k8s_version=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bin" render -f "$root/push-operator/tests/fixtures/optional.yaml" > "$tmp/all.yaml"
"$venv/bin/python" - "$tmp" <<'PY'
import sys, yaml
tmp = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{tmp}/all.yaml")) if d]
builtin = [d for d in docs if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].startswith(("apps/", "policy/", "autoscaling/", "batch/", "networking.k8s.io/"))]
custom = [d for d in docs if d not in builtin]
kinds = sorted(d["kind"] for d in custom)
assert kinds == ["HTTPRoute", "PodMonitor", "PrometheusRule"], kinds
assert any(d["kind"] == "Ingress" for d in builtin)
yaml.safe_dump_all(builtin, open(f"{tmp}/builtin.yaml", "w"))
for d in custom:
    yaml.safe_dump(d, open(f"{tmp}/{d['kind']}.yaml", "w"))
rule = next(d for d in custom if d["kind"] == "PrometheusRule")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(f"{tmp}/rules.yaml", "w"))
PY
"$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$tmp/builtin.yaml"
echo "ok   $(grep -c '^kind:' "$tmp/builtin.yaml") built-in objects of tests/fixtures/optional.yaml (templates, Ingress) are valid Kubernetes $k8s_version"

psa=$("$root/e2e/build/psa-check.sh")
"$psa" "$tmp/all.yaml" >/dev/null 2>&1 || { echo "FAIL tests/fixtures/optional.yaml: pods with template overrides violate Pod Security restricted"; "$psa" "$tmp/all.yaml"; exit 1; }
echo "ok   pods with every template override pass Pod Security restricted (latest)"

mods=$(go env GOMODCACHE 2>/dev/null || true)
gw="$mods/sigs.k8s.io/gateway-api@v1.6.3/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
po="$mods/github.com/prometheus-operator/prometheus-operator@v0.89.0/example/prometheus-operator-crd"
if [ -f "$gw" ] && [ -d "$po" ]; then
  "$venv/bin/python" - "$tmp" "$gw" "$po/monitoring.coreos.com_podmonitors.yaml" "$po/monitoring.coreos.com_prometheusrules.yaml" <<'PY'
import sys, yaml, jsonschema
tmp, crds = sys.argv[1], sys.argv[2:]
def nullable(s):
    if isinstance(s, dict):
        out = {k: nullable(v) for k, v in s.items() if not k.startswith("x-kubernetes")}
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    return [nullable(v) for v in s] if isinstance(s, list) else s
failed = 0
for path in crds:
    crd = yaml.safe_load(open(path))
    kind = crd["spec"]["names"]["kind"]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = nullable(version["schema"]["openAPIV3Schema"])
    obj = yaml.safe_load(open(f"{tmp}/{kind}.yaml"))
    body = {k: v for k, v in obj.items() if k != "metadata"}
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(body))
    for e in errors:
        print(f"FAIL {kind}: {'.'.join(map(str, e.path))}: {e.message}")
    failed += bool(errors)
    # The validator must not be vacuous: an unknown spec type is refused.
    field = {"HTTPRoute": "rules", "PodMonitor": "selector", "PrometheusRule": "groups"}[kind]
    bad = dict(body, spec={**body["spec"], field: "not-an-object"})
    if jsonschema.Draft7Validator(schema).is_valid(bad):
        print(f"FAIL {kind}: schema accepts a broken object"); failed += 1
    if not errors:
        print(f"ok   rendered {kind} is valid against its CRD ({path.split('/')[-1]})")
sys.exit(1 if failed else 0)
PY
else
  echo "skip Gateway API / Prometheus Operator CRD schemas not in the Go module cache (make test-e2e downloads them)"
fi

command -v promtool >/dev/null || { echo "FAIL promtool missing (Debian: apt-get install prometheus)"; exit 1; }
promtool check rules "$tmp/rules.yaml" >/dev/null
echo "ok   PrometheusRule groups pass promtool check rules"
