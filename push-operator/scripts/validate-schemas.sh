#!/usr/bin/env bash
# Schema checks that need Python tools (run by `make test-operator`):
#  1. the CRD validates as apiextensions.k8s.io/v1 (kubernetes-validate --strict);
#  2. every object `push-operator render` produces for each example manifest
#     validates against the official Kubernetes schemas (--strict: unknown
#     fields are errors);
#  3. the operator install manifest validates too;
#  4. every pod `push-operator render` produces for each example passes Pod
#     Security `restricted` (latest), checked by e2e/build/psa-check (the API
#     server's own k8s.io/pod-security-admission checks; built once with go);
#  5. the example manifests validate against the CRD's own openAPIV3Schema.
# Usage: validate-schemas.sh PUSH_OPERATOR_BINARY VENV_DIR
set -euo pipefail
bin=$1
venv=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
k8s_version=1.33.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bin" crd > "$tmp/crd.yaml"
cmp -s "$tmp/crd.yaml" "$root/crds/pushcluster.yaml" || { echo "crds/pushcluster.yaml is stale"; exit 1; }
"$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$root/crds/pushcluster.yaml"
echo "ok   CRD is a valid apiextensions.k8s.io/v1 CustomResourceDefinition"

"$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$root/push-operator/deploy/operator.yaml"
echo "ok   push-operator/deploy/operator.yaml (namespace, RBAC, Deployment)"

psa=$("$root/e2e/build/psa-check.sh")
for example in "$root"/docs/examples/*.yaml; do
  out="$tmp/$(basename "$example")"
  "$bin" render -f "$example" > "$out"
  "$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$out"
  echo "ok   $(grep -c '^kind:' "$out") rendered objects of $(basename "$example") are valid Kubernetes $k8s_version"
  "$psa" "$out" 2>/dev/null || { echo "FAIL $(basename "$example"): rendered pods violate Pod Security restricted"; "$psa" "$out"; exit 1; }
  echo "ok   rendered pods of $(basename "$example") pass Pod Security restricted (latest)"
done

"$venv/bin/python" "$root/push-operator/scripts/check_examples.py" "$root/crds/pushcluster.yaml" "$root"/docs/examples/*.yaml

# spec.template / spec.expose / spec.monitoring: rendered objects against the
# Kubernetes, Gateway API and Prometheus Operator schemas, alerts with promtool.
"$root/push-operator/scripts/validate-optional.sh" "$bin" "$venv" "$k8s_version"
