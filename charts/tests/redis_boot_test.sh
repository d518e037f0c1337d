#!/usr/bin/env bash
# Test of charts/push/files/redis-boot.sh. First with a stub redis-cli: which
# master each pod follows when no Sentinel answers, when one does, and when
# the Sentinels name this very pod. Then against real redis-server and
# redis-sentinel processes with a password (REDIS_PASSWORD): the configs it
# writes are accepted and enforce auth, replicas authenticate to the master,
# a pod with data never replicates an empty master, and an empty pod never
# becomes master over a peer holding data (the operator's topology rule).
set -euo pipefail
script=$(cd "$(dirname "$0")/.." && pwd)/push/files/redis-boot.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
cat > "$tmp/bin/redis-cli" <<'STUB'
#!/bin/sh
# Answers `sentinel get-master-addr-by-name push` like redis-cli --raw would:
# $STUB_MASTER from the Sentinel on $STUB_HOST; anything else is refused.
host="" ask=no
while [ $# -gt 0 ]; do
  case "$1" in
    -h) host=$2; shift ;;
    get-master-addr-by-name) ask=yes ;;
  esac
  shift
done
if [ "$ask" = yes ] && [ -n "${STUB_MASTER:-}" ] && [ "$host" = "${STUB_HOST:-}" ]; then
  printf '%s\n6379\n' "$STUB_MASTER"; exit 0
fi
echo "Could not connect to Redis at $host: Connection refused" >&2
exit 1
STUB
chmod +x "$tmp/bin/redis-cli"
d=push-redis-headless.ns.svc

run() { # POD [STUB_HOST STUB_MASTER]
  rm -f "$tmp"/*.conf
  env PATH="$tmp/bin:$PATH" CONF_DIR="$tmp" POD_NAME="$1" STS=push-redis HEADLESS=push-redis-headless \
    NAMESPACE=ns REPLICAS=3 QUORUM=2 DOWN_AFTER_MS=5000 FAILOVER_TIMEOUT_MS=60000 \
    DATA_DIR="$tmp/nodata" STUB_HOST="${2:-}" STUB_MASTER="${3:-}" sh "$script" > "$tmp/log"
}
expect() { grep -qxF "$2" "$tmp/$1" || { echo "FAIL: $1 lacks '$2'"; cat "$tmp/$1"; exit 1; }; }
refuse() { ! grep -q "$2" "$tmp/$1" || { echo "FAIL: $1 has '$2'"; cat "$tmp/$1"; exit 1; }; }

run push-redis-0                                   # fresh install, pod 0
refuse redis.conf replicaof
expect sentinel.conf "sentinel monitor push push-redis-0.$d 6379 2"
expect redis.conf "replica-announce-ip push-redis-0.$d"

run push-redis-1                                   # fresh install, pod 1
expect redis.conf "replicaof push-redis-0.$d 6379"

run push-redis-0 "push-redis-2.$d" "push-redis-1.$d"   # old master restarts after a failover
expect redis.conf "replicaof push-redis-1.$d 6379"
expect sentinel.conf "sentinel monitor push push-redis-1.$d 6379 2"

run push-redis-1 "push-redis-0.$d" "push-redis-1.$d"   # Sentinels name this pod
refuse redis.conf replicaof
echo "ok   redis-boot.sh picks the master: fresh install, after failover, self"

# Real redis-server and redis-sentinel (installed by `make test-operator`;
# skipped without them). Three pods on loopback ports via PEERS.
if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null; then
  echo "skip redis-boot.sh with real Redis: redis-server/redis-sentinel not installed"
  exit 0
fi
ports=$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
r0=$1 r1=$2 r2=$3 s0=$4 s1=$5 s2=$6
peers="127.0.0.1:$r0:$s0 127.0.0.1:$r1:$s1 127.0.0.1:$r2:$s2"
pw='pa ss"word\x'
pids=()
stop() {
  for p in "$r0" "$r1" "$r2"; do REDISCLI_AUTH="$pw" redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop EXIT
fail() { echo "FAIL: $*"; cat "$tmp"/log "$tmp"/*.log 2>/dev/null | tail -n 60; exit 1; }
# boot ORDINAL DATA_DIR [WAIT_SECONDS]: runs the script into $tmp/pod<N>/.
boot() {
  mkdir -p "$tmp/pod$1"; rm -f "$tmp/pod$1"/*.conf
  env -u REDISCLI_AUTH CONF_DIR="$tmp/pod$1" POD_NAME="push-redis-$1" STS=push-redis HEADLESS=h NAMESPACE=ns \
    REPLICAS=3 QUORUM=2 DOWN_AFTER_MS=5000 FAILOVER_TIMEOUT_MS=60000 PEERS="$peers" \
    DATA_DIR="$2" WAIT_SECONDS="${3:-20}" REDIS_PASSWORD="$pw" sh "$script" > "$tmp/log" 2>&1
}
# start_redis ORDINAL DIR / start_sentinel ORDINAL: from the generated configs,
# bound to loopback only.
start_redis() {
  mkdir -p "$2"
  sed -i -e 's/^bind .*/bind 127.0.0.1/' -e "s|^dir .*|dir $2|" -e 's/^appendonly .*/appendonly no/' "$tmp/pod$1/redis.conf"
  redis-server "$tmp/pod$1/redis.conf" --save '' >"$tmp/redis$1.log" 2>&1 & pids+=($!)
}
start_sentinel() {
  cp "$tmp/pod$1/sentinel.conf" "$tmp/sentinel$1.conf"
  sed -i -e 's/^bind .*/bind 127.0.0.1/' "$tmp/sentinel$1.conf"
  redis-sentinel "$tmp/sentinel$1.conf" >"$tmp/sentinel$1.log" 2>&1 & pids+=($!)
}
auth() { REDISCLI_AUTH="$pw" redis-cli --no-auth-warning -p "$@"; }
until_() { # DESCRIPTION COMMAND...: polls for up to 20 s
  local what=$1; shift
  for _ in $(seq 200); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done
  fail "timed out waiting for $what"
}
dbsize_is() { [ "$(auth "$1" --raw dbsize)" = "$2" ]; }
names() { [ "$(auth "$1" --raw sentinel get-master-addr-by-name push | tr '\n' ' ')" = "127.0.0.1 $2 " ]; }

# Fresh install: pod 0 is master; its configs carry the auth lines.
boot 0 "$tmp/data0" || fail "pod 0 boot"
grep -q replicaof "$tmp/pod0/redis.conf" && fail "fresh pod 0 replicates"
for line in 'requirepass "pa ss\"word\\x"' 'masterauth "pa ss\"word\\x"'; do
  grep -qxF "$line" "$tmp/pod0/redis.conf" || fail "redis.conf lacks $line"
done
for line in 'requirepass "pa ss\"word\\x"' 'sentinel sentinel-pass "pa ss\"word\\x"' 'sentinel auth-pass push "pa ss\"word\\x"'; do
  grep -qxF "$line" "$tmp/pod0/sentinel.conf" || fail "sentinel.conf lacks $line"
done
grep -qF 'ss"word' "$tmp/log" && fail "the password reached the log"
[ "$(stat -c %a "$tmp/pod0/redis.conf")" = 600 ] || fail "redis.conf is readable by others"
start_redis 0 "$tmp/data0"; start_sentinel 0
until_ "pod 0 answers with the password" auth "$r0" ping
redis-cli -p "$r0" dbsize 2>&1 | grep -q NOAUTH || fail "Redis answers without the password"
until_ "Sentinel names pod 0" names "$s0" "$r0"
redis-cli -p "$s0" sentinel masters 2>&1 | grep -q NOAUTH || fail "Sentinel answers without the password"
echo "ok   redis-boot.sh with REDIS_PASSWORD: Redis and Sentinel require it, no password in argv or log"

# Pod 1 restarts holding data while Sentinel's master (pod 0) is empty: it
# must not replicate (that would wipe its data); it waits and gives up.
mkdir -p "$tmp/old1"; printf 'REDIS0011 some earlier dataset' > "$tmp/old1/dump.rdb"
if boot 1 "$tmp/old1" 4; then fail "pod 1 with data followed an empty master: $(cat "$tmp/pod1/redis.conf")"; fi
grep -q "is empty and this pod holds data" "$tmp/log" || fail "pod 1 did not say why it waits"
[ -e "$tmp/pod1/redis.conf" ] && fail "pod 1 wrote a config while waiting"
# An empty pod 1 just follows; once pod 0 holds data, so does pod 1 with data.
boot 1 "$tmp/data1" || fail "empty pod 1 boot"
grep -qxF "replicaof 127.0.0.1 $r0" "$tmp/pod1/redis.conf" || fail "empty pod 1 does not follow pod 0"
auth "$r0" set k v >/dev/null
boot 1 "$tmp/old1" || fail "pod 1 with data, master with data"
grep -qxF "replicaof 127.0.0.1 $r0" "$tmp/pod1/redis.conf" || fail "pod 1 does not follow pod 0"
echo "ok   a pod holding data never replicates an empty master"

# Pod 1 runs as a replica (masterauth works) with its Sentinel.
start_redis 1 "$tmp/data1"; start_sentinel 1
until_ "pod 1 replicates pod 0 with masterauth" dbsize_is "$r1" 1
until_ "Sentinel of pod 1 names pod 0" names "$s1" "$r0"
# Pod 0 (Redis and Sentinel) restarts with an empty volume; Sentinel of
# pod 1 still names it (no quorum to fail over): it must wait, not start as
# an empty master that pod 1 would resync from.
auth "$r0" shutdown nosave >/dev/null 2>&1 || true
kill "${pids[1]}"; rm -rf "$tmp/data0"
if boot 0 "$tmp/data0" 4; then fail "empty pod 0 became master over pod 1's data"; fi
grep -q "waiting: Sentinel still names this empty pod master while a peer holds data" "$tmp/log" \
  || fail "pod 0 did not say why it waits"
# The same pod 0 restarting *with* its volume waits too: pod 1 may hold
# more than the volume, and would resync from it in full.
mkdir -p "$tmp/old0"; printf 'REDIS0011 some earlier dataset' > "$tmp/old0/dump.rdb"
if boot 0 "$tmp/old0" 4; then fail "restarted pod 0 became master over replica pod 1's data"; fi
grep -q "waiting: Sentinel still names this restarted pod master while a replica holds data" "$tmp/log" \
  || fail "restarted pod 0 did not say why it waits"
# Without any Sentinel answering, a replica holding data with no master also
# means wait (a failover is missing), not crown the empty pod 0.
kill "${pids[3]}"
until_ "Sentinel of pod 1 stopped" bash -c "! redis-cli -p $s1 ping"
if boot 0 "$tmp/data0" 4; then fail "empty pod 0 became master over a replica with data"; fi
grep -q "replicas hold data but there is no master" "$tmp/log" || fail "pod 0 did not say why it waits"
dbsize_is "$r1" 1 || fail "pod 1 lost its data"
echo "ok   an empty or restarted pod never becomes master over a peer holding data"
