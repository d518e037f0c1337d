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
