"""7. Deleting a PushCluster: the garbage collector removes every object it
owned and their pods. The Redis volumes (PVCs of the StatefulSet) stay, as
docs/operator.md says: data outlives an accidental delete."""

from conftest import kjson, kubectl, wait_until

from test_02_examples import expected


def test_garbage_collector_removes_owned_objects(clusters):
    c = clusters["minimal"]
    ns, name = c["ns"], c["name"]
    uid = kjson("-n", ns, "get", "pushcluster", name)["metadata"]["uid"]
    kubectl("-n", ns, "delete", "pushcluster", name, "--wait=true", "--timeout=60s")

    def leftovers():
        left = []
        for kind, pattern in expected("minimal"):
            out = kubectl("-n", ns, "get", kind, pattern.format(name), "--ignore-not-found", "-o", "name")
            left += out.split()
        for p in kjson("-n", ns, "get", "pods")["items"]:
            left.append("pod/" + p["metadata"]["name"])
        # Nothing anywhere in the namespace still points at the deleted owner.
        for kind in ("configmaps", "services", "statefulsets", "deployments", "poddisruptionbudgets",
                     "horizontalpodautoscalers"):
            for o in kjson("-n", ns, "get", kind)["items"]:
                if any(r["uid"] == uid for r in o["metadata"].get("ownerReferences", [])):
                    left.append(f"{kind}/{o['metadata']['name']}")
        return left

    wait_until("no object of the deleted PushCluster", 120, lambda: leftovers() == [])
    pvcs = kjson("-n", ns, "get", "pvc")["items"]
    assert pvcs, "the Redis volumes were deleted with the PushCluster"
