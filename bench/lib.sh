# Shared helpers for bench/run.sh and bench/smoke.sh: install and run nginx+nchan, Redis and
# push-server on loopback, pinned to core 0. Source it; it defines functions only.

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BENCH_RUN=${BENCH_RUN:-$BENCH_ROOT/target-bench/run}
NCHAN_PORT=${NCHAN_PORT:-18090}
PUSH_PORT=${PUSH_PORT:-18080}
# Write delay of the push-delay variant.
BENCH_WRITE_DELAY=${BENCH_WRITE_DELAY:-10ms}
REDIS_PORT=${REDIS_PORT:-16390}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
# Servers and generator run ahead of whatever else the machine is doing (builds of other
# work): a negative nice value makes the scheduler prefer them. Needs root; 0 turns it off.
BENCH_NICE=${BENCH_NICE:--15}
[ "$(id -u)" = 0 ] || BENCH_NICE=0
PIN_SERVER=(nice -n "$BENCH_NICE" taskset -c "$SERVER_CPU")
PIN_LOAD=(nice -n "$BENCH_NICE" taskset -c "$LOAD_CPU")

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have_nchan() { command -v nginx >/dev/null && [ -f "$NCHAN_MODULE" ]; }

# Installs nginx + nchan and redis-server from Debian when missing.
ensure_packages() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    [ -f "$NCHAN_MODULE" ] || missing+=(libnginx-mod-nchan)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    }
}

# Polls a URL until it answers 200, at most $2 seconds.
wait_http() {
    local url=$1 secs=${2:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        curl -fs -o /dev/null "$url" && return 0
        sleep 0.1
    done
    log "no answer from $url after ${secs}s"
    return 1
}

# The machine may be shared (builds of other work): before each measurement wait, up to
# $QUIET_WAIT seconds, for a second in which both cores together are below $QUIET_PCT % busy.
# Returns 1 (and the caller notes it) when the machine never got quiet.
QUIET_PCT=${QUIET_PCT:-15}
QUIET_WAIT=${QUIET_WAIT:-120}
cpu_busy_idle() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
wait_quiet() {
    local start=$SECONDS b0 i0 b1 i1 pct
    while ((SECONDS - start < QUIET_WAIT)); do
        read -r b0 i0 < <(cpu_busy_idle)
        sleep 1
        read -r b1 i1 < <(cpu_busy_idle)
        pct=$(((b1 - b0) * 100 / ((b1 - b0) + (i1 - i0) + 1)))
        ((pct < QUIET_PCT)) && return 0
        log "machine busy (${pct}% of all cores), waiting"
    done
    return 1
}

REDIS_PID=
start_redis() {
    mkdir -p "$BENCH_RUN/redis"
    "${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$BENCH_RUN/redis" --logfile "$BENCH_RUN/redis/redis.log" --maxclients 10000 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "redis did not start (see $BENCH_RUN/redis/redis.log)"
    return 1
}

stop_redis() {
    [ -n "$REDIS_PID" ] || return 0
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
}

# Starts nginx+nchan (memory storage, or Redis storage when $1 = redis). Sets SERVER_PIDS to
# master,worker(,redis).
NGINX_DIR=
start_nchan() {
    local storage=${1:-memory} upstream="" pass=""
    NGINX_DIR=$BENCH_RUN/nchan-$storage
    rm -rf "$NGINX_DIR" && mkdir -p "$NGINX_DIR"
    if [ "$storage" = redis ]; then
        start_redis || return 1
        upstream="upstream bench_redis { nchan_redis_server redis://127.0.0.1:$REDIS_PORT; }"
        pass="nchan_redis_pass bench_redis;"
    fi
    sed -e "s|@RUN@|$NGINX_DIR|g; s|@PORT@|$NCHAN_PORT|g; s|@REDIS_UPSTREAM@|$upstream|; s|@REDIS_PASS@|$pass|g" \
        "$BENCH_ROOT/bench/nginx/nchan.conf.in" >"$NGINX_DIR/nginx.conf"
    "${PIN_SERVER[@]}" nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" || return 1
    wait_http "http://127.0.0.1:$NCHAN_PORT/healthz" || return 1
    local master worker
    master=$(cat "$NGINX_DIR/nginx.pid")
    worker=$(pgrep -P "$master" | paste -sd,)
    SERVER_PIDS=$master,$worker${REDIS_PID:+,$REDIS_PID}
}

stop_nchan() {
    if [ -n "$NGINX_DIR" ] && [ -f "$NGINX_DIR/nginx.pid" ]; then
        local master
        master=$(cat "$NGINX_DIR/nginx.pid")
        kill -QUIT "$master" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$master" 2>/dev/null || true
    fi
    NGINX_DIR=
    stop_redis
}

# Starts push-server from $PUSH_BIN (memory broker, or Redis when $1 = redis).
PUSH_PID=
start_push() {
    local broker=${1:-memory} args=(--listen "127.0.0.1:$PUSH_PORT")
    mkdir -p "$BENCH_RUN"
    if [ "$broker" = redis ]; then
        start_redis || return 1
        args+=(--redis-url "redis://127.0.0.1:$REDIS_PORT")
    fi
    # Extra server flags (the push-delay variant).
    read -r -a extra <<<"${PUSH_EXTRA:-}"
    args+=("${extra[@]}")
    RUST_LOG=${PUSH_LOG:-warn} "${PIN_SERVER[@]}" "$PUSH_BIN" "${args[@]}" >"$BENCH_RUN/push-$broker.log" 2>&1 &
    PUSH_PID=$!
    wait_http "http://127.0.0.1:$PUSH_PORT/healthz" || { stop_push; return 1; }
    SERVER_PIDS=$PUSH_PID${REDIS_PID:+,$REDIS_PID}
}

stop_push() {
    if [ -n "$PUSH_PID" ]; then
        kill "$PUSH_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do kill -0 "$PUSH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PUSH_PID" 2>/dev/null || true
        wait "$PUSH_PID" 2>/dev/null || true
    fi
    PUSH_PID=
    stop_redis
}

# start_server / stop_server by name: nchan, nchan-redis, push, push-redis. Sets PORT.
start_server() {
    case $1 in
        nchan) PORT=$NCHAN_PORT; start_nchan memory ;;
        nchan-redis) PORT=$NCHAN_PORT; start_nchan redis ;;
        push) PORT=$PUSH_PORT; start_push memory ;;
        push-redis) PORT=$PUSH_PORT; start_push redis ;;
        # Push with an opt-in write delay (docs/operations.md, "Tuning").
        push-delay) PORT=$PUSH_PORT; PUSH_EXTRA="--write-delay $BENCH_WRITE_DELAY" start_push memory ;;
        *) log "unknown server $1"; return 1 ;;
    esac
}

stop_server() {
    case $1 in
        nchan | nchan-redis) stop_nchan ;;
        push | push-redis | push-delay) stop_push ;;
    esac
}

# URL templates for a server on $PORT (nchan's config mirrors Push's paths).
url_args() {
    printf '%s\n' --ws-url "ws://127.0.0.1:$PORT/ws?channels={channel}" \
        --sse-url "http://127.0.0.1:$PORT/sse?channels={channel}" \
        --publish-url "http://127.0.0.1:$PORT/api/v1/channels/{channel}/messages"
}
