"""Prints the push-server container's env of a rendered push chart as
`NAME=value` lines for run.sh to start the real binary with, so the env
names the chart sets are checked by the server itself. Secret-sourced
values get stand-ins (a random key; PUSH_JWT_PUBLIC_KEY the PEM file given
as argv[2]); the broker's addresses and passwords are left out (no Redis in
this check). With `--no-secrets`, the Secret-sourced keys are left out too:
a pod whose Secret holds none of its keys."""
import secrets
import sys

import yaml

path, pem = sys.argv[1], sys.argv[2]
no_secrets = "--no-secrets" in sys.argv[3:]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
c = dep["spec"]["template"]["spec"]["containers"][0]
for e in c.get("env", []):
    name = e["name"]
    if name.startswith("PUSH_REDIS_"):
        continue
    if name == "PUSH_JWT_PUBLIC_KEY":
        if not no_secrets:
            print(f"{name}={pem}")
    elif "value" in e:
        print(f"{name}={e['value']}")
    elif "secretKeyRef" in e.get("valueFrom", {}):
        if not no_secrets:
            print(f"{name}={secrets.token_hex(24)}")
    else:
        sys.exit(f"push-server env {name}: neither a value nor a secretKeyRef")
