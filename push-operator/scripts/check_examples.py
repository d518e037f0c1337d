"""Validate PushCluster manifests against the generated CRD's openAPIV3Schema.

Usage: check_examples.py CRD_YAML MANIFEST...

Uses jsonschema with the structural subset Kubernetes uses; CEL rules
(x-kubernetes-validations) are not evaluated here (the Rust tests evaluate
them with kube's CEL interpreter). A built-in negative case proves the
validator rejects what the schema forbids, so a silently permissive run
cannot pass.
"""
import sys

import jsonschema
import yaml


def schema_of(crd_path):
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    assert crd["kind"] == "CustomResourceDefinition", crd_path
    version = crd["spec"]["versions"][0]
    return crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"], version["schema"]["openAPIV3Schema"]


def nullable_aware(schema):
    """OpenAPI `nullable: true` means JSON null is accepted too."""
    if isinstance(schema, dict):
        out = {k: nullable_aware(v) for k, v in schema.items()}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
        return out
    if isinstance(schema, list):
        return [nullable_aware(v) for v in schema]
    return schema


def main():
    crd_path, manifests = sys.argv[1], sys.argv[2:]
    group, version, kind, schema = schema_of(crd_path)
    schema = nullable_aware(schema)
    validator = jsonschema.Draft7Validator(schema)
    failed = 0
    for path in manifests:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                if doc.get("apiVersion") != f"{group}/{version}" or doc.get("kind") != kind:
                    print(f"FAIL {path}: not a {kind} {group}/{version}")
                    failed += 1
                    continue
                body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
                errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
                for e in errors:
                    print(f"FAIL {path}: {'.'.join(map(str, e.path))}: {e.message}")
                failed += bool(errors)
                if not errors:
                    print(f"ok   {path} ({doc['metadata']['name']})")
    for bad in ({"spec": {"replicas": 0}}, {"spec": {"redis": {"mode": "Standalone"}}},
                {"spec": {"redis": {"storage": {"size": "lots"}}}}, {"spec": {"server": {"drainPeriod": "soon"}}}):
        if validator.is_valid(bad):
            print(f"FAIL schema accepts invalid spec {bad}")
            failed += 1
    print(f"{len(manifests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
