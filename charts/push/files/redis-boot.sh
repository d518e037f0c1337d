#!/bin/sh
# Init container of the chart's Redis pods (broker: redis). Writes redis.conf
# and sentinel.conf for this pod into $CONF_DIR (default /conf).
#
# The master rule is the operator's (push-operator/src/topology.rs):
#
# * Sentinel owns failover: when a peer's Sentinel names a master, that is
#   the master, so a restarted former master comes back as a replica of the
#   one Sentinel promoted.
# * Never an empty master over data: a pod Sentinel still names master that
#   restarts with an empty volume while a peer holds data waits for Sentinel
#   to fail over; a pod holding data never replicates from a master that
#   answers with an empty dataset (that would wipe its data): it waits.
# * Never a restarted master over replicas' data: a pod Sentinel still names
#   master that restarts with data while a replica holding data answers waits
#   for the failover too; its volume may be behind the replicas, which would
#   resync from it in full. Sentinel promotes the most up-to-date replica.
# * Only when no Sentinel answers: a running master holding data is the
#   master; running replicas holding data without a master mean a failover
#   is missing, so wait; otherwise (first install) pod 0 is master.
#
# Waiting polls every 2 s for up to WAIT_SECONDS (default 600), then exits
# non-zero: the pod restarts and decides again, and nothing started wrong.
#
# Auth: REDIS_PASSWORD (unset/empty = none) becomes requirepass + masterauth
# in redis.conf and requirepass, sentinel sentinel-pass and sentinel
# auth-pass in sentinel.conf. The probes pass it to redis-cli through
# REDISCLI_AUTH (environment), never on a command line or in a log line.
#
# Environment: POD_NAME, STS (StatefulSet name), HEADLESS (headless Service),
# NAMESPACE, REPLICAS, QUORUM, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, CONF_DIR,
# DATA_DIR (the Redis volume, default /data), WAIT_SECONDS, REDIS_PASSWORD.
# PEERS (tests only): "host:redis_port:sentinel_port" per ordinal, instead of
# the pods' DNS names and the standard ports.
set -eu
conf="${CONF_DIR:-/conf}"
data="${DATA_DIR:-/data}"
wait_seconds="${WAIT_SECONDS:-600}"
password="${REDIS_PASSWORD:-}"
case "$password" in
  *"
"*) echo "REDIS_PASSWORD must not contain a newline" >&2; exit 1 ;;
esac
if [ -n "$password" ]; then
  REDISCLI_AUTH="$password"
  export REDISCLI_AUTH
else
  unset REDISCLI_AUTH 2>/dev/null || true
fi

domain="${HEADLESS}.${NAMESPACE}.svc"
ordinal="${POD_NAME##*-}"
if [ -z "${PEERS:-}" ]; then
  PEERS=""
  i=0
  while [ "$i" -lt "$REPLICAS" ]; do
    PEERS="$PEERS ${STS}-${i}.${domain}:6379:26379"
    i=$((i + 1))
  done
fi

# peer N -> "host redis_port sentinel_port" of ordinal N
peer() {
  set -- "$1" $PEERS
  n=$1; shift
  shift "$n"
  echo "$1" | tr ':' ' '
}
count=$(echo $PEERS | wc -w)
set -- $(peer "$ordinal"); me_host=$1; me_port=$2; me_sport=$3

cli() { # host port args...
  h=$1; p=$2; shift 2
  timeout 3 redis-cli --no-auth-warning -h "$h" -p "$p" --raw "$@" 2>/dev/null
}

# Whether this pod's volume holds an earlier dataset (RDB or AOF), as the
# operator's boot step checks it.
has_data=no
for f in "$data/dump.rdb" "$data/appendonly.aof" "$data"/appendonlydir/*.base.*; do
  if [ -s "$f" ]; then has_data=yes; fi
done

# keys HOST PORT -> DBSIZE, or nothing when it does not answer.
keys() {
  k=$(cli "$1" "$2" dbsize | head -n 1 || true)
  case "$k" in ''|*[!0-9]*) ;; *) echo "$k" ;; esac
}
# role HOST PORT -> master / slave / nothing
role() { cli "$1" "$2" role | head -n 1 || true; }

# Sentinel's master: "host port" from the first peer Sentinel that answers.
sentinel_master() {
  i=0
  while [ "$i" -lt "$count" ]; do
    if [ "$i" != "$ordinal" ]; then
      set -- $(peer "$i")
      answer=$(cli "$1" "$3" sentinel get-master-addr-by-name push | head -n 2 | tr '\n' ' ' || true)
      set -- $answer
      case "${1:-}" in
        ""|*ERR*|*rror*|NOAUTH*|WRONGPASS*) ;;
        *) if [ -n "${2:-}" ]; then echo "$1 $2"; return; fi ;;
      esac
    fi
    i=$((i + 1))
  done
}

# Whether a peer other than HOST:PORT ($1 $2; "" for none) holds data.
peer_has_data() {
  i=0
  while [ "$i" -lt "$count" ]; do
    if [ "$i" != "$ordinal" ]; then
      set -- "$1" "$2" $(peer "$i")
      if [ "$3:$4" != "$1:$2" ]; then
        k=$(keys "$3" "$4")
        if [ -n "$k" ] && [ "$k" -gt 0 ]; then return 0; fi
      fi
    fi
    i=$((i + 1))
  done
  return 1
}

# Whether a peer answers as a replica holding data.
replica_has_data() {
  i=0
  while [ "$i" -lt "$count" ]; do
    if [ "$i" != "$ordinal" ]; then
      set -- $(peer "$i")
      k=$(keys "$1" "$2")
      if [ -n "$k" ] && [ "$k" -gt 0 ] && [ "$(role "$1" "$2")" = slave ]; then return 0; fi
    fi
    i=$((i + 1))
  done
  return 1
}

# Decides once: sets master_host/master_port (empty host: this pod is
# master), or prints why to wait and returns 1.
decide() {
  master_host=""; master_port=""
  sm=$(sentinel_master)
  if [ -n "$sm" ]; then
    set -- $sm
    if [ "$1" = "$me_host" ] && [ "$2" = "$me_port" ]; then
      if [ "$has_data" = no ] && peer_has_data "" ""; then
        echo "waiting: Sentinel still names this empty pod master while a peer holds data"
        return 1
      fi
      if [ "$has_data" = yes ] && replica_has_data; then
        echo "waiting: Sentinel still names this restarted pod master while a replica holds data"
        return 1
      fi
      echo "Sentinel names this pod master"
      return 0
    fi
    if [ "$has_data" = yes ] && [ "$(role "$1" "$2")" = master ] && [ "$(keys "$1" "$2")" = 0 ]; then
      echo "waiting: Sentinel's master $1:$2 is empty and this pod holds data"
      return 1
    fi
    echo "Sentinel says the master is $1:$2"
    master_host=$1; master_port=$2
    return 0
  fi
  # No Sentinel opinion: a running master holding data, the one with most.
  best=-1; replica_data=no
  i=0
  while [ "$i" -lt "$count" ]; do
    if [ "$i" != "$ordinal" ]; then
      set -- $(peer "$i")
      k=$(keys "$1" "$2")
      if [ -n "$k" ] && [ "$k" -gt 0 ]; then
        case "$(role "$1" "$2")" in
          master) if [ "$k" -gt "$best" ]; then best=$k; master_host=$1; master_port=$2; fi ;;
          slave) replica_data=yes ;;
        esac
      fi
    fi
    i=$((i + 1))
  done
  if [ -n "$master_host" ]; then
    echo "no Sentinel answered; $master_host:$master_port is master and holds data"
    return 0
  fi
  if [ "$replica_data" = yes ]; then
    echo "waiting: replicas hold data but there is no master and no Sentinel opinion"
    return 1
  fi
  if [ "$has_data" = yes ] || [ "$ordinal" = 0 ]; then
    echo "no Sentinel answered and no peer holds data; this pod is master"
    return 0
  fi
  set -- $(peer 0)
  master_host=$1; master_port=$2
  echo "no Sentinel answered; starting as a replica of pod 0 ($1:$2)"
}

start=$(date +%s)
until decide; do
  if [ $(( $(date +%s) - start + 2 )) -gt "$wait_seconds" ]; then
    echo "gave up waiting after ${wait_seconds}s; the pod will restart and decide again" >&2
    exit 1
  fi
  sleep 2
done

# The configs may carry the password: readable by the pod's user only.
umask 077
# Quotes a config value for Redis' parser (sdssplitargs): backslash and
# double quote escaped, so any password stays one argument.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

cat > "$conf/redis.conf" <<CONF
port ${me_port}
bind * -::*
protected-mode no
dir ${data}
appendonly yes
# Announce the stable DNS name, not the pod IP, which changes on restart.
replica-announce-ip ${me_host}
CONF
if [ -n "$master_host" ]; then
  echo "replicaof ${master_host} ${master_port}" >> "$conf/redis.conf"
fi
monitor_host="${master_host:-$me_host}"
monitor_port="${master_port:-$me_port}"

cat > "$conf/sentinel.conf" <<CONF
port ${me_sport}
bind * -::*
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${me_host}
sentinel monitor push ${monitor_host} ${monitor_port} ${QUORUM}
sentinel down-after-milliseconds push ${DOWN_AFTER_MS}
sentinel failover-timeout push ${FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs push 1
CONF
if [ -n "$password" ]; then
  q=$(quote "$password")
  printf 'requirepass %s\nmasterauth %s\n' "$q" "$q" >> "$conf/redis.conf"
  printf 'requirepass %s\nsentinel sentinel-pass %s\nsentinel auth-pass push %s\n' "$q" "$q" "$q" \
    >> "$conf/sentinel.conf"
fi
echo "redis.conf and sentinel.conf written for ${me_host}"
