"""9. A spec change (server.heartbeat) rolls the push Deployment; connected
WebSocket and SSE clients get reconnect/draining and resume from their last
id with no gap and no duplicate while a publisher runs."""

import time

import jwt

from clients import Publisher, SseSubscriber, WsSubscriber
from conftest import AUTH, kjson, kubectl, service_url, wait_until


def rolled_out(ns, name, old_pods):
    d = kjson("-n", ns, "get", "deployment", name)
    st = d["status"]
    pods = {p["metadata"]["name"] for p in kjson("-n", ns, "get", "pods", "-l",
                                                  "app.kubernetes.io/component=server")["items"]}
    done = (st.get("observedGeneration") == d["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("replicas") == st.get("readyReplicas")
            and not (pods & old_pods))
    return done


def test_rolling_update_without_a_gap(clusters):
    c = clusters["full"]
    ns, name = c["ns"], c["name"]
    svc = service_url(ns, f"{name}-push")
    tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 3600, "channels": ["e2e:*"]},
                     AUTH["jwtSecret"], algorithm="HS256")
    channel = "e2e:rollout"
    subs = [WsSubscriber(svc, [channel], tok).start(), WsSubscriber(svc, [channel], tok).start(),
            SseSubscriber(svc, [channel], tok).start(), SseSubscriber(svc, [channel], tok).start()]
    for s in subs:
        assert s.connected.wait(30), s.errors
    old_pods = {p["metadata"]["name"] for p in kjson("-n", ns, "get", "pods", "-l",
                                                      "app.kubernetes.io/component=server")["items"]}
    pub = Publisher(svc, channel, AUTH["publishKey"], rate=20).start()
    try:
        wait_until("first deliveries", 30, lambda: all(s.numbers(channel) for s in subs))
        kubectl("-n", ns, "patch", "pushcluster", name, "--type", "merge",
                "-p", '{"spec":{"server":{"heartbeat":"20s"}}}')
        wait_until("the Deployment rolled out", 400, lambda: rolled_out(ns, f"{name}-push", old_pods))
        cm = kjson("-n", ns, "get", "configmap", f"{name}-push")["data"]["config.yaml"]
        assert "heartbeat: 20s" in cm, cm
        n = len(pub.accepted)
        wait_until("publishes after the rollout", 30, lambda: len(pub.accepted) > n + 20)
    finally:
        pub.close()
    accepted = pub.accepted
    for s in subs:
        wait_until(f"{type(s).__name__} caught up", 60, lambda s=s: set(accepted) <= set(s.numbers(channel)))
        s.close()
    for s in subs:
        got = s.numbers(channel)
        assert "draining" in s.reconnect_reasons, (type(s).__name__, s.reconnect_reasons, s.errors[-3:])
        assert s.connects >= 2
        assert len(got) == len(set(got)), f"{type(s).__name__} got duplicates"
        assert not s.gaps, s.gaps
        # Everything accepted arrived, in publish order.
        assert [x for x in got if x in set(accepted)] == sorted(accepted)
