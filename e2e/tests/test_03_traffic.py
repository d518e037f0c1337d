"""3. Traffic through the cluster: WebSocket and SSE subscribers on one push
pod, publishes over HTTP to another pod and to the push Service, delivered
through Redis (the full example: JWT auth and a publish key)."""

import time

import jwt

from clients import Publisher, SseSubscriber, WsSubscriber
from conftest import AUTH, kjson, pod_ready, service_url, wait_until


def token(channels):
    return jwt.encode({"sub": "e2e", "exp": int(time.time()) + 3600, "channels": channels},
                      AUTH["jwtSecret"], algorithm="HS256")


def push_pods(c):
    pods = kjson("-n", c["ns"], "get", "pods", "-l",
                 f"app.kubernetes.io/component=server,app.kubernetes.io/instance={c['name']}")["items"]
    return [p for p in pods if pod_ready(p)]


def test_delivery_across_two_pods_and_the_service(clusters):
    c = clusters["full"]
    pods = wait_until("two ready push pods", 120, lambda: push_pods(c) if len(push_pods(c)) >= 2 else None)
    a, b = (f"http://{p['status']['podIP']}:8080" for p in pods[:2])
    svc = service_url(c["ns"], f"{c['name']}-push")
    subs = [WsSubscriber(a, ["e2e:traffic"], token(["e2e:*"])).start(),
            SseSubscriber(a, ["e2e:traffic"], token(["e2e:*"])).start(),
            WsSubscriber(svc, ["e2e:traffic"], token(["e2e:*"])).start(),
            SseSubscriber(svc, ["e2e:traffic"], token(["e2e:*"])).start()]
    try:
        for s in subs:
            assert s.connected.wait(30), s.errors
        via_b = Publisher(b, "e2e:traffic", AUTH["publishKey"])
        via_svc = Publisher(svc, "e2e:traffic", AUTH["publishKey"])
        for n in range(20):
            (via_b if n % 2 else via_svc).publish_one({"n": n})
        for s in subs:
            wait_until(f"{type(s).__name__} got all 20", 30, lambda s=s: s.numbers("e2e:traffic") == list(range(20)))
    finally:
        for s in subs:
            s.close()


def test_auth_is_enforced(clusters):
    c = clusters["full"]
    svc = service_url(c["ns"], f"{c['name']}-push")
    import urllib.error
    import pytest
    with pytest.raises(urllib.error.HTTPError) as e:
        Publisher(svc, "e2e:traffic").publish_one({"n": 0})
    assert e.value.code == 401
