"""The chart's RBAC is what the operator really needs: with one verb taken
away (patch on StatefulSets), the next reconcile fails with Forbidden and the
PushCluster reports Ready=False / ReconcileError; with the chart's role back,
it recovers."""

import copy

import yaml

from conftest import apply, condition, kjson, kubectl, wait_until

ROLE = "push-operator"


def test_missing_verb_is_reported(clusters):
    c = clusters["cluster-mode"]
    original = kjson("get", "clusterrole", ROLE)
    cut = copy.deepcopy(original)
    for rule in cut["rules"]:
        if "statefulsets" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    for obj in (cut, original):
        for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            obj["metadata"].pop(k, None)
    try:
        kubectl("replace", "-f", "-", input=yaml.safe_dump(cut))
        kubectl("-n", c["ns"], "patch", "pushcluster", c["name"], "--type", "merge",
                "-p", '{"spec":{"server":{"historySize":77}}}')

        def refused():
            pc = kjson("-n", c["ns"], "get", "pushcluster", c["name"])
            r = condition(pc, "Ready")
            return r if r and r["status"] == "False" and r["reason"] == "ReconcileError" else None

        ready = wait_until("Ready=False after the verb was removed", 120, refused)
        assert "forbidden" in ready["message"].lower(), ready
    finally:
        apply(original)
    wait_until("Ready again with the chart's role", 180, lambda: (condition(
        kjson("-n", c["ns"], "get", "pushcluster", c["name"]), "Ready") or {}).get("status") == "True")
