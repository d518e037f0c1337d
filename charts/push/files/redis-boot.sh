#!/bin/sh
# Init container of the chart's Redis pods (broker: redis). Writes redis.conf
# and sentinel.conf for this pod into $CONF_DIR (default /conf).
#
# Who is master: whatever the Sentinels say. The script asks every other
# pod's Sentinel for the master of group "push"; the first answer wins, so a
# restarted former master comes back as a replica of the one Sentinel
# promoted. Only when no Sentinel answers (first install, or every pod down
# at once) does pod 0 start as master and the others replicate it.
#
# Environment: POD_NAME, STS (StatefulSet name), HEADLESS (headless Service),
# NAMESPACE, REPLICAS, QUORUM, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, CONF_DIR.
set -eu
conf="${CONF_DIR:-/conf}"

domain="${HEADLESS}.${NAMESPACE}.svc"
me="${POD_NAME}.${domain}"
master=""

i=0
while [ "$i" -lt "$REPLICAS" ]; do
  peer="${STS}-${i}.${domain}"
  if [ "$peer" != "$me" ]; then
    answer=$(timeout 3 redis-cli -h "$peer" -p 26379 --raw \
      sentinel get-master-addr-by-name push 2>/dev/null | head -n 1 || true)
    case "$answer" in
      ""|*ERR*|*rror*) ;;
      *) master="$answer"; echo "sentinel on $peer says the master is $master"; break ;;
    esac
  fi
  i=$((i + 1))
done
if [ -z "$master" ]; then
  master="${STS}-0.${domain}"
  echo "no sentinel answered; starting with $master as master"
fi

cat > "$conf/redis.conf" <<CONF
port 6379
bind * -::*
protected-mode no
dir /data
appendonly yes
# Announce the stable DNS name, not the pod IP, which changes on restart.
replica-announce-ip ${me}
CONF
if [ "$master" != "$me" ]; then
  echo "replicaof ${master} 6379" >> "$conf/redis.conf"
fi

cat > "$conf/sentinel.conf" <<CONF
port 26379
bind * -::*
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${me}
sentinel monitor push ${master} 6379 ${QUORUM}
sentinel down-after-milliseconds push ${DOWN_AFTER_MS}
sentinel failover-timeout push ${FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs push 1
CONF
echo "redis.conf and sentinel.conf written for ${me}"
