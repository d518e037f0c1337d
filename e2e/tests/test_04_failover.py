"""4. Redis failover on real pods, with a publisher running: the master pod
deleted, then (separately) the master's redis-server process killed. Sentinel
promotes a replica, the master label and Service move, the push pods follow,
and with publishMinReplicas: 1 no accepted message is lost."""

import os
import signal
import subprocess
import time

import jwt

from clients import Publisher, WsSubscriber
from conftest import AUTH, kjson, kubectl, service_url, wait_until

SOCK = os.environ.get("PUSH_E2E_RUN", "/var/lib/push-e2e") + "/containerd/containerd.sock"
REPORT = []


def master_pods(c):
    """The pod the master Service selects: the operator names it by the
    StatefulSet's pod-name label in the selector (no pod labels, no pod patch)."""
    sel = kjson("-n", c["ns"], "get", "service", f"{c['name']}-redis-master")["spec"].get("selector") or {}
    name = sel.get("statefulset.kubernetes.io/pod-name")
    return [name] if name else []


def master_service_target(c):
    eps = kjson("-n", c["ns"], "get", "endpointslices", "-l",
                f"kubernetes.io/service-name={c['name']}-redis-master")["items"]
    return {e["targetRef"]["name"] for s in eps for e in s.get("endpoints") or []
            if e.get("conditions", {}).get("ready")}


def settled_master(c, not_this=None):
    pods = master_pods(c)
    status = kjson("-n", c["ns"], "get", "pushcluster", c["name"])["status"]["redis"].get("master")
    if len(pods) == 1 and pods[0] != not_this and status == pods[0] and master_service_target(c) == {pods[0]}:
        return pods[0]
    return None


def run_through(c, disrupt, what):
    svc = service_url(c["ns"], f"{c['name']}-push")
    tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 3600, "channels": ["e2e:*"]},
                     AUTH["jwtSecret"], algorithm="HS256")
    channel = "e2e:failover:" + what.replace(" ", "-")
    sub = WsSubscriber(svc, [channel], tok).start()
    assert sub.connected.wait(30), sub.errors
    pub = Publisher(svc, channel, AUTH["publishKey"], rate=40).start()
    try:
        wait_until("a first delivery", 30, lambda: sub.numbers(channel))
        old = wait_until("a settled master", 60, lambda: settled_master(c))
        disrupt(old)
        # Keep publishing through the failover and a while after it.
        new = wait_until(f"a new master after {what}", 180, lambda: settled_master(c, not_this=old)
                         if what == "pod deleted" else settled_master(c))
        seen = len(pub.accepted)
        wait_until("publishes accepted again", 60, lambda: len(pub.accepted) > seen + 40)
    finally:
        pub.close()
    wait_until("every accepted message delivered", 60,
               lambda: set(pub.accepted) <= set(sub.numbers(channel)))
    sub.close()
    got = sub.numbers(channel)
    lost = sorted(set(pub.accepted) - set(got))
    REPORT.append(f"{what}: master {old} -> {new}; accepted {len(pub.accepted)}, refused "
                  f"{len(pub.refused)}, delivered {len(set(got))}, lost {len(lost)}, "
                  f"duplicates {len(got) - len(set(got))}, reconnects {sub.reconnect_reasons}")
    with open(os.path.join(os.path.dirname(__file__), "..", ".state", "failover.txt"), "a") as f:
        f.write(REPORT[-1] + "\n")
    print(REPORT[-1])
    assert not lost
    assert len(got) == len(set(got)), "a message was delivered twice"
    return old, new


def test_master_pod_deleted(clusters):
    c = clusters["full"]
    assert c["spec"]["server"]["publishMinReplicas"] == 1
    old, new = run_through(c, lambda m: kubectl("-n", c["ns"], "delete", "pod", m, "--wait=false"),
                           "pod deleted")
    assert new != old


def container_pid(ns, pod):
    p = kjson("-n", ns, "get", "pod", pod)
    cid = next(s["containerID"] for s in p["status"]["containerStatuses"] if s["name"] == "redis")
    cid = cid.split("://", 1)[1]
    out = subprocess.run(["ctr", "-a", SOCK, "-n", "k8s.io", "tasks", "ls"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines()[1:]:
        task, pid, _ = line.split()
        if task == cid:
            return int(pid)
    raise AssertionError(f"no task for {pod}")


def test_master_process_killed(clusters):
    c = clusters["full"]

    def kill(master):
        os.kill(container_pid(c["ns"], master), signal.SIGKILL)

    run_through(c, kill, "process killed")
