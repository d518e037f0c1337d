#!/usr/bin/env bash
# Unit test of charts/push/files/redis-boot.sh with a stub redis-cli: which
# master each pod follows when no Sentinel answers, when one does, and when
# the Sentinels name this very pod.
set -euo pipefail
script=$(cd "$(dirname "$0")/.." && pwd)/push/files/redis-boot.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
cat > "$tmp/bin/redis-cli" <<'STUB'
#!/bin/sh
# Answers like `redis-cli --raw sentinel get-master-addr-by-name push` would:
# $STUB_MASTER from the Sentinel on $STUB_HOST, "connection refused" elsewhere.
host=$2
if [ -n "${STUB_MASTER:-}" ] && [ "$host" = "${STUB_HOST:-}" ]; then
  printf '%s\n6379\n' "$STUB_MASTER"; exit 0
fi
echo "Could not connect to Redis at $host:26379: Connection refused" >&2
exit 1
STUB
chmod +x "$tmp/bin/redis-cli"
d=push-redis-headless.ns.svc

run() { # POD [STUB_HOST STUB_MASTER]
  rm -f "$tmp"/*.conf
  env PATH="$tmp/bin:$PATH" CONF_DIR="$tmp" POD_NAME="$1" STS=push-redis HEADLESS=push-redis-headless \
    NAMESPACE=ns REPLICAS=3 QUORUM=2 DOWN_AFTER_MS=5000 FAILOVER_TIMEOUT_MS=60000 \
    STUB_HOST="${2:-}" STUB_MASTER="${3:-}" sh "$script" > "$tmp/log"
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

# The configs it writes are accepted by the real redis-server and
# redis-sentinel (installed by `make test-operator`; skipped without them).
# Pod DNS names do not resolve here, so the Sentinel's master address is
# replaced by the loopback Redis started from the generated redis.conf.
if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null; then
  echo "skip redis-boot.sh configs with real Redis: redis-server/redis-sentinel not installed"
  exit 0
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run push-redis-0
mkdir -p "$tmp/data"
rport=$(free_port) sport=$(free_port)
sed -i -e "s/^port .*/port $rport/" -e "s|^dir .*|dir $tmp/data|" -e 's/^bind .*/bind 127.0.0.1/' "$tmp/redis.conf"
sed -i -e "s/^port .*/port $sport/" -e 's/^bind .*/bind 127.0.0.1/' \
  -e "s/^sentinel monitor push .* 6379 /sentinel monitor push 127.0.0.1 $rport /" \
  -e "s/^sentinel announce-ip .*/sentinel announce-ip 127.0.0.1/" "$tmp/sentinel.conf"
# --save '' --appendonly no: nothing to write at shutdown (Redis refuses to
# exit on SIGTERM when its final save fails, e.g. into a removed directory).
redis-server "$tmp/redis.conf" --daemonize no --save '' --appendonly no >"$tmp/redis.log" 2>&1 & rpid=$!
redis-sentinel "$tmp/sentinel.conf" >"$tmp/sentinel.log" 2>&1 & spid=$!
stop() {
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  kill "$rpid" "$spid" 2>/dev/null || true
  wait "$rpid" "$spid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop EXIT
for _ in $(seq 50); do
  master=$(redis-cli -p "$sport" --raw sentinel get-master-addr-by-name push 2>/dev/null | head -n 1 || true)
  role=$(redis-cli -p "$rport" --raw role 2>/dev/null | head -n 1 || true)
  [ "$master" = 127.0.0.1 ] && [ "$role" = master ] && break
  sleep 0.1
done
if [ "$master" != 127.0.0.1 ] || [ "$role" != master ]; then
  echo "FAIL: real redis-server/redis-sentinel with the generated configs (master=$master role=$role)"
  cat "$tmp/redis.log" "$tmp/sentinel.log"; exit 1
fi
echo "ok   redis-server and redis-sentinel run with the configs redis-boot.sh writes"
