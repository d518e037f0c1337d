"""5. Redis Cluster mode: the init Job runs and creates the cluster, and
sharded pub/sub delivers on channels of every shard (each channel's history
key is checked on the master that owns its slot)."""

import time

import jwt

from clients import Publisher, SseSubscriber, WsSubscriber
from conftest import kjson, kubectl, secret_data, service_url, wait_until


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(channel):
    return crc16(channel.encode()) % 16384


def redis_cli(ns, pod, *args):
    # The node requires the generated password; the container has it in
    # REDIS_PASSWORD, and redis-cli takes it from REDISCLI_AUTH (never argv).
    return kubectl("-n", ns, "exec", pod, "-c", "redis", "--", "sh", "-c",
                   'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli -p 6379 "$@"', "sh", *args)


def test_init_job_created_the_cluster(clusters):
    c = clusters["cluster-mode"]
    job = kjson("-n", c["ns"], "get", "job", f"{c['name']}-redis-cluster-init-3x2")
    assert job["status"].get("succeeded") == 1, job["status"]
    info = redis_cli(c["ns"], f"{c['name']}-redis-0", "CLUSTER", "INFO")
    assert "cluster_state:ok" in info, info
    assert "cluster_size:3" in info, info
    assert "cluster_known_nodes:6" in info, info


def owner_of(c, channel):
    """The Redis pod that is master for the channel's slot."""
    s = slot(channel)
    for i in range(6):
        pod = f"{c['name']}-redis-{i}"
        role = redis_cli(c["ns"], pod, "ROLE").split()[0]
        if role != "master":
            continue
        # A master answers a key of its own slot locally, any other with MOVED.
        if "MOVED" not in redis_cli(c["ns"], pod, "GET", f"probe{{{channel}}}"):
            return pod
    raise AssertionError(f"no master owns slot {s}")


def test_sharded_pubsub_on_every_shard(clusters):
    c = clusters["cluster-mode"]
    # One channel per shard (three masters split the 16384 slots).
    channels, owners = [], set()
    for n in range(200):
        ch = f"e2e:shard:{n}"
        owner = owner_of(c, ch) if len(owners) < 3 else None
        if owner and owner not in owners:
            owners.add(owner)
            channels.append(ch)
        if len(owners) == 3:
            break
    assert len(owners) == 3, f"channels only reached {owners}"
    svc = service_url(c["ns"], f"{c['name']}-push")
    auth = secret_data(c["ns"], f"{c['name']}-auth")  # generated: the example names no auth
    tok = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 600, "channels": ["e2e:*"]},
                     auth["jwtSecret"], algorithm="HS256")
    subs = [WsSubscriber(svc, channels, tok).start(), SseSubscriber(svc, channels, tok).start()]
    try:
        for s in subs:
            assert s.connected.wait(30), s.errors
        for ch in channels:
            p = Publisher(svc, ch, auth["publishKey"])
            for n in range(10):
                p.publish_one({"n": n})
        for s in subs:
            for ch in channels:
                wait_until(f"{ch} delivered", 30, lambda s=s, ch=ch: s.numbers(ch) == list(range(10)))
    finally:
        for s in subs:
            s.close()
    # Each channel's history lives on the master of its slot.
    for ch in channels:
        owner = owner_of(c, ch)
        assert redis_cli(c["ns"], owner, "EXISTS", f"push:{{{ch}}}:h").strip() == "1", (ch, owner)
