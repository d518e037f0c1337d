"""Validates the rendered objects of kinds that have no Kubernetes schema
(HTTPRoute, ServiceMonitor, PrometheusRule, PodMonitor) against the
openAPIV3Schema of their real CRDs, strictly: an unknown field is an error,
as `kubectl apply --validate=strict` would report it.

Usage: crd_validate.py RENDERED.yaml CRD.yaml...
Prints one line per object checked; exits 1 on the first invalid one.
"""
import sys

import jsonschema
import yaml


def strict(schema):
    """Structural schema -> JSON Schema refusing unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if schema.get("nullable"):
            out.pop("nullable")
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


schemas = {}
for path in sys.argv[2:]:
    with open(path) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                s = strict(v["schema"]["openAPIV3Schema"])
                # metadata is the API server's (kubernetes-validate style checks are not for it).
                s.get("properties", {}).pop("metadata", None)
                schemas[(f"{group}/{v['name']}", kind)] = s

with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
checked = 0
for d in docs:
    key = (d["apiVersion"], d["kind"])
    if d["kind"] not in ("HTTPRoute", "ServiceMonitor", "PrometheusRule", "PodMonitor"):
        continue
    if key not in schemas:
        print(f"FAIL {d['kind']}/{d['metadata']['name']}: no CRD for {d['apiVersion']}")
        sys.exit(1)
    body = {k: v for k, v in d.items() if k != "metadata"}
    errors = sorted(jsonschema.Draft7Validator(schemas[key]).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        print(f"FAIL {d['kind']}/{d['metadata']['name']}: at {'/'.join(map(str, e.path))}: {e.message[:200]}")
        sys.exit(1)
    checked += 1
print(f"ok   {checked} objects valid against their CRDs")
