"""13. Storage a non-root pod can write: the default StorageClass
(local-path-provisioner, docs/e2e.md) gives a PVC that a pod running as UID
999 with fsGroup 999 — the operator's Redis — writes in a namespace that
enforces Pod Security restricted; the data outlives the pod, and deleting the
PVC removes the volume and its folder."""

import pathlib

import pytest

from conftest import (delete_namespace, images, kjson, kubectl, apply, new_namespace, wait_until)

LOCAL_PATH = pathlib.Path("/var/lib/push-e2e/local-path")


@pytest.fixture(scope="module")
def ns():
    ns = new_namespace("e2e-storage")
    yield ns
    delete_namespace(ns)


def pod(name, claim, script, image):
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def finished(ns, name):
    phase = kjson("-n", ns, "get", "pod", name)["status"].get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_non_root_pod_writes_its_pvc(ns):
    sc = kjson("get", "storageclass", "standard")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["provisioner"] == "rancher.io/local-path"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    # No storageClassName: the default class is what a chart's PVC gets.
    apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}, ns=ns)
    assert kjson("-n", ns, "get", "pvc", "data")["status"]["phase"] == "Pending"  # waits for its consumer
    redis = images()["redis"]
    apply(pod("writer", "data", "id -u > /data/who && echo written >> /data/who && cat /data/who", redis), ns=ns)
    assert wait_until("the writer pod to finish", 120, lambda: finished(ns, "writer")) == "Succeeded", \
        kubectl("-n", ns, "logs", "writer", check=False)
    assert kubectl("-n", ns, "logs", "writer").split() == ["999", "written"]

    pvc = kjson("-n", ns, "get", "pvc", "data")
    assert pvc["status"]["phase"] == "Bound"
    pv = kjson("get", "pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["storageClassName"] == "standard"
    folder = pathlib.Path(pv["spec"]["hostPath"]["path"])
    assert folder.parent == LOCAL_PATH
    assert (folder / "who").stat().st_uid == 999

    # A second pod reads what the first wrote: the data is on the volume.
    apply(pod("reader", "data", "cat /data/who", redis), ns=ns)
    assert wait_until("the reader pod to finish", 120, lambda: finished(ns, "reader")) == "Succeeded"
    assert kubectl("-n", ns, "logs", "reader").split() == ["999", "written"]


def test_deleting_the_pvc_removes_volume_and_folder(ns):
    pv_name = kjson("-n", ns, "get", "pvc", "data")["spec"]["volumeName"]
    folder = pathlib.Path(kjson("get", "pv", pv_name)["spec"]["hostPath"]["path"])
    kubectl("-n", ns, "delete", "pod", "writer", "reader", "--wait=true")
    kubectl("-n", ns, "delete", "pvc", "data", "--wait=true")
    wait_until("the PV deleted", 120, lambda: not kubectl("get", "pv", pv_name, "--ignore-not-found").strip())
    wait_until("its folder removed", 60, lambda: not folder.exists())
