"""1. `helm install` of charts/push-operator: the CRD is established, two
operator pods run under the chart's ServiceAccount, and one of them leads."""

from conftest import OPERATOR_NS, kjson, kubectl, pod_ready, wait_until

SELECTOR = "app.kubernetes.io/name=push-operator"


def operator_pods():
    return kjson("-n", OPERATOR_NS, "get", "pods", "-l", SELECTOR)["items"]


def test_crd_established(operator):
    crd = kjson("get", "crd", "pushclusters.push.dev")
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established and established[0]["status"] == "True"
    # The CRD the chart installed is the one the operator binary generates.
    assert crd["spec"]["names"]["kind"] == "PushCluster"


def test_two_replicas_run_under_the_chart_service_account(operator):
    pods = wait_until("two ready operator pods", 120,
                      lambda: [p for p in operator_pods() if pod_ready(p)] if len(
                          [p for p in operator_pods() if pod_ready(p)]) == 2 else None)
    sa = kjson("-n", OPERATOR_NS, "get", "deploy", "push-operator")["spec"]["template"]["spec"]["serviceAccountName"]
    assert sa == "push-operator"
    for p in pods:
        assert p["spec"]["serviceAccountName"] == sa
        # The pod security context the chart promises: not root.
        assert p["spec"]["securityContext"]["runAsNonRoot"] is True


def test_one_leader(operator):
    names = {p["metadata"]["name"] for p in operator_pods()}
    lease = wait_until("the leader Lease", 60,
                       lambda: kjson("-n", OPERATOR_NS, "get", "lease", "push-operator-leader"))
    holder = lease["spec"].get("holderIdentity")
    assert holder in names, f"lease held by {holder!r}, pods are {names}"


def test_service_account_may_do_only_what_the_chart_grants(operator):
    sa = f"system:serviceaccount:{OPERATOR_NS}:push-operator"

    def can(verb, resource, ns="default"):
        resource, _, sub = resource.partition("/")
        extra = ["--subresource", sub] if sub else []
        out = kubectl("auth", "can-i", verb, resource, *extra, "--as", sa, "-n", ns, check=False)
        return out.strip() == "yes"

    assert can("patch", "statefulsets.apps")
    assert can("watch", "pushclusters.push.dev")
    assert can("patch", "pushclusters.push.dev/status")
    # Secrets: read the ones a spec names, create the generated `<name>-auth`
    # and `<name>-redis-auth` once; never change or delete one (issue 13).
    assert can("get", "secrets") and can("create", "secrets")
    assert not can("update", "secrets") and not can("patch", "secrets") and not can("delete", "secrets")
    # Least privilege: no pod patch (the master Service selects by pod name),
    # no deleting what the garbage collector removes.
    assert not can("patch", "pods")
    assert not can("delete", "statefulsets.apps")
