#!/usr/bin/env bash
# Side-by-side benchmark of Push and nginx+nchan on this machine.
#
# Every scenario gets a freshly started server pinned to core $SERVER_CPU (Redis too, for the
# Redis variants, so its CPU is counted with the server's); push-bench runs pinned to core
# $LOAD_CPU with one worker thread. Results go to target-bench/run/results-*.jsonl and the
# tables, commands and machine description into docs/benchmarks.md.
#
# Environment:
#   BENCH_SERVERS    servers to measure (default: "nchan push nchan-redis push-redis"; also
#                    push-delay: Push with --write-delay $BENCH_WRITE_DELAY, default 10ms)
#   BENCH_TRANSPORTS (default: "ws sse")
#   BENCH_SCENARIOS  (default: "idle10k idle19k bcast1k bcast10k personal")
#   BENCH_DURATION   seconds of publishing per fan-out scenario (default 4)
#   BENCH_ROUNDS     rounds of every row (default 3): each round runs every server once, so
#                    the servers alternate; the document shows each row's median round, every
#                    round's figures, and Push against nchan round by round
#   BENCH_DOC        document to update (default docs/benchmarks.md; "none" to skip)
#   BENCH_APPEND=1   add this run's rows to bench/results/latest.* instead of replacing them
#   BENCH_RPS=1      steer loopback's receive processing to the load core for the run (lo's
#                    rps_cpus; restored afterwards; root). On loopback the receiving end's TCP
#                    work runs on the sender's core, so by default the server's core also
#                    pays for the clients' receive path, which a real network keeps on the
#                    clients' machines; the generator's core then does it (see the notes)
#   PUSH_BIN         push-server binary (default: built here with cargo build --release)
#   PUSH_DESC        how that binary was built, for the document
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SERVERS=${BENCH_SERVERS:-nchan push nchan-redis push-redis}
TRANSPORTS=${BENCH_TRANSPORTS:-ws sse}
SCENARIOS=${BENCH_SCENARIOS:-idle10k idle19k bcast1k bcast10k personal}
DURATION=${BENCH_DURATION:-4}
ROUNDS=${BENCH_ROUNDS:-3}
DOC=${BENCH_DOC:-$BENCH_ROOT/docs/benchmarks.md}
mkdir -p "$BENCH_RUN"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$BENCH_RUN/results-$STAMP.jsonl
COMMANDS=$BENCH_RUN/commands-$STAMP.txt
NOTES=$BENCH_RUN/notes-$STAMP.txt
: >"$RESULTS"
: >"$COMMANDS"
: >"$NOTES"

ensure_packages

RPS_FILE=/sys/class/net/lo/queues/rx-0/rps_cpus
if [ "${BENCH_RPS:-0}" = 1 ]; then
    RPS_OLD=$(cat "$RPS_FILE")
    printf '%x\n' $((1 << LOAD_CPU)) >"$RPS_FILE"
    trap 'echo "$RPS_OLD" >"$RPS_FILE"' EXIT
    echo "Loopback receive processing steered to core $LOAD_CPU (BENCH_RPS=1): the clients' TCP receive work ran on the generator's core, not the server's." >>"$NOTES"
fi

log "building push-bench (release)"
(cd "$BENCH_ROOT" && CARGO_TARGET_DIR=$BENCH_ROOT/target-bench cargo build --release -q -p push-bench)
BENCH_BIN=$BENCH_ROOT/target-bench/release/push-bench

if [[ " $SERVERS " == *" push"* ]] && [ -z "${PUSH_BIN:-}" ]; then
    log "building push-server (release)"
    if (cd "$BENCH_ROOT" && cargo build --release -q -p push-server); then
        PUSH_BIN=$BENCH_ROOT/target/release/push-server
    else
        echo "push-server did not build: Push rows skipped." >>"$NOTES"
        SERVERS=$(echo "$SERVERS" | tr ' ' '\n' | grep -v '^push' | paste -sd' ')
    fi
fi

# scenario name -> push-bench arguments (personal-channel rate is lower with Redis storage,
# matching the issue's comparison points).
scenario_args() {
    local name=$1 server=$2 personal_rate=20000
    [[ $server == *redis ]] && personal_rate=5000
    case $name in
        idle10k) echo "idle -n 10000 -c 10000" ;;
        idle19k) echo "idle -n 19000 -c 19000" ;;
        hold19k) echo "idle -n 19000 -c 19000 --hold ${BENCH_HOLD:-150} --sample-every 15" ;;
        bcast1k) echo "fanout -n 1000 -c 1 --rate 100 --duration $DURATION" ;;
        bcast10k) echo "fanout -n 10000 -c 1 --rate 10 --duration $DURATION" ;;
        personal) echo "fanout -n 10000 -c 10000 --rate $personal_rate --duration $DURATION" ;;
        max-personal) echo "max -n 10000 -c 10000 --start-rate 5000 --factor 1.4 --max-steps 8 --duration $DURATION" ;;
        max-bcast1k) echo "max -n 1000 -c 1 --start-rate 25 --factor 1.4 --max-steps 8 --duration $DURATION" ;;
        *) log "unknown scenario $name"; return 1 ;;
    esac
}

# Rounds outermost: this machine's speed drifts over minutes (docs/benchmarks.md, "Reading the
# figures"), so each server's rows are spread over the run instead of taken back to back.
for round in $(seq "$ROUNDS"); do
for server in $SERVERS; do
    for scenario in $SCENARIOS; do
        for transport in $TRANSPORTS; do
            if ! start_server "$server"; then
                echo "$server did not start for $scenario/$transport." >>"$NOTES"
                stop_server "$server"
                continue
            fi
            mapfile -t urls < <(url_args)
            if ! wait_quiet; then
                echo "$server $scenario $transport: other processes were using the CPUs when this row started (server and generator ran at nice $BENCH_NICE ahead of them)." >>"$NOTES"
            fi
            read -r -a args <<<"$(scenario_args "$scenario" "$server")"
            cmd=("${PIN_LOAD[@]}" "$BENCH_BIN" "${args[@]}" --transport "$transport" --label "$server"
                --threads 1 "${urls[@]}" --server-pid "$SERVER_PIDS" --server-core "$SERVER_CPU" --out "$RESULTS")
            log "round $round/$ROUNDS: $server $scenario $transport"
            printf '%s\n' "${cmd[*]}" | sed -e "s|$BENCH_ROOT/||; s|--server-pid [0-9,]*|--server-pid <server pids>|; s|--out [^ ]*|--out <results.jsonl>|" >>"$COMMANDS"
            if ! "${cmd[@]}" >/dev/null; then
                echo "$server $scenario $transport: push-bench failed (see the log above)." >>"$NOTES"
            fi
            # Both servers keep their Redis state through scripts: a Redis row without one
            # measured the memory store (as a server-level nchan_redis_pass once did).
            if [[ $server == *redis ]] && ! redis-cli -p "$REDIS_PORT" info commandstats | grep -q '^cmdstat_eval'; then
                echo "$server $scenario $transport: Redis ran no script; this row did not use Redis storage." >>"$NOTES"
            fi
            stop_server "$server"
        done
    done
done
done

[ "$DOC" = none ] && { log "results in $RESULTS"; exit 0; }

# Keep the raw data with the document; with BENCH_APPEND=1 the earlier rows stay.
KEEP=$BENCH_ROOT/bench/results
mkdir -p "$KEEP"
if [ "${BENCH_APPEND:-0}" = 1 ] && [ -f "$KEEP/latest.jsonl" ]; then
    cat "$RESULTS" >>"$KEEP/latest.jsonl"
    cat "$COMMANDS" >>"$KEEP/latest.commands"
    cat "$NOTES" >>"$KEEP/latest.notes"
else
    cp "$RESULTS" "$KEEP/latest.jsonl"
    cp "$COMMANDS" "$KEEP/latest.commands"
    cp "$NOTES" "$KEEP/latest.notes"
fi
RESULTS=$KEEP/latest.jsonl
COMMANDS=$KEEP/latest.commands
NOTES=$KEEP/latest.notes

# The generated section: machine, versions, tables, commands.
FRAGMENT=$BENCH_RUN/fragment-$STAMP.md
{
    echo
    echo "Generated by \`bench/run.sh\` on $(date -u +%Y-%m-%dT%H:%MZ) at commit \`$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\`."
    echo
    echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")."
    echo "- Open files per process: $(ulimit -n) (hard $(ulimit -Hn))."
    echo "- nginx $(nginx -v 2>&1 | sed 's|.*/||'), libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')."
    echo "- Server (and Redis) pinned to core $SERVER_CPU, push-bench to core $LOAD_CPU with one worker thread, both at nice $BENCH_NICE; a fresh server per row; 64-byte payloads; fan-out rows publish for $DURATION s; $ROUNDS round(s), each running every server once."
    echo "- push-server: ${PUSH_DESC:-built from this commit}."
    busy=$(grep -c 'other processes' "$NOTES" || true)
    if [ "$busy" -gt 0 ]; then
        echo "- $busy of $(wc -l <"$COMMANDS") rows started while other processes were using the CPUs; server and generator ran at nice $BENCH_NICE ahead of them (rows: $(grep 'other processes' "$NOTES" | cut -d: -f1 | paste -sd, | sed 's/,/, /g'))."
    fi
    if grep -qv 'other processes' "$NOTES"; then
        echo
        echo "Notes from this run:"
        grep -v 'other processes' "$NOTES" | sed 's/^/- /'
    fi
    "$BENCH_BIN" report "$RESULTS"
    echo
    echo "Commands (in this order; \`<server pids>\` are the server's, nginx master and worker, plus redis-server):"
    echo
    echo '```'
    cat "$COMMANDS"
    echo '```'
    echo
} >"$FRAGMENT"
mkdir -p "$(dirname "$DOC")"
if ! grep -q 'push-bench:results:begin' "$DOC" 2>/dev/null; then
    printf '# Benchmarks\n\n<!-- push-bench:results:begin -->\n<!-- push-bench:results:end -->\n' >>"$DOC"
fi
awk -v frag="$FRAGMENT" '
    /push-bench:results:begin/ { print; while ((getline line < frag) > 0) print line; skip = 1; next }
    /push-bench:results:end/ { skip = 0 }
    !skip { print }
' "$DOC" >"$DOC.tmp" && mv "$DOC.tmp" "$DOC"
log "results in $RESULTS; $DOC updated"
