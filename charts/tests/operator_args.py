"""Prints the operator container's args and plain env of a rendered
push-operator chart, one `NAME=value` env line per variable, then `--`, then
one arg per line, for run.sh to start the real binary with them."""
import sys

import yaml

with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
c = dep["spec"]["template"]["spec"]["containers"][0]
for e in c.get("env", []):
    if "value" in e:
        print(f"{e['name']}={e['value']}")
print("--")
for a in c.get("args", []):
    print(a)
