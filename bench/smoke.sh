#!/usr/bin/env bash
# Smoke test of push-bench itself (`make test-bench`): a tiny, bounded run of each scenario
# and transport against nginx+nchan (installed when missing) and against a debug push-server.
# It checks that every published message was delivered exactly once; it asserts nothing about
# timing, which depends on the machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CARGO=${CARGO:-cargo}
NCHAN_PORT=${SMOKE_NCHAN_PORT:-18190}
PUSH_PORT=${SMOKE_PUSH_PORT:-18180}
BENCH_RUN=$BENCH_RUN/smoke
mkdir -p "$BENCH_RUN"
OUT=$BENCH_RUN/smoke.jsonl
: >"$OUT"

ensure_packages
TARGET=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}
BENCH_BIN=$TARGET/debug/push-bench
# The same build as `make test` (whole workspace, all targets): nothing compiles twice.
(cd "$BENCH_ROOT" && $CARGO build -q --workspace --all-targets)
PUSH_BIN=${PUSH_BIN:-$TARGET/debug/push-server}

SERVER=
cleanup() { [ -n "$SERVER" ] && stop_server "$SERVER"; true; }
trap cleanup EXIT

failures=0
check() {
    # The last line of $OUT is the record of the run just made.
    local rec
    rec=$(tail -n 1 "$OUT")
    if [[ $rec == *'"connect_failed":0'* && $rec == *'"disconnected":0'* ]] &&
        { [[ $rec == *'"scenario":"idle"'* ]] ||
            [[ $rec == *'"loss":0'* && $rec == *'"duplicates":0'* && $rec == *'"publish_failed":0'* && $rec != *'"received":0,'* ]]; }; then
        echo "ok: $1"
    else
        echo "FAILED: $1: $rec"
        failures=$((failures + 1))
    fi
}

for SERVER in nchan push; do
    start_server "$SERVER"
    mapfile -t urls < <(url_args)
    for transport in ws sse; do
        common=(--transport "$transport" --label "$SERVER" "${urls[@]}" --server-pid "$SERVER_PIDS" --out "$OUT"
            --connect-deadline 20 --ready-timeout 20)
        "$BENCH_BIN" idle -n 200 -c 200 --settle 0.2 "${common[@]}" >/dev/null
        check "$SERVER $transport idle"
        "$BENCH_BIN" fanout -n 50 -c 1 --rate 50 --duration 1 "${common[@]}" >/dev/null
        check "$SERVER $transport broadcast"
        "$BENCH_BIN" fanout -n 100 -c 100 --rate 500 --duration 1 "${common[@]}" >/dev/null
        check "$SERVER $transport personal"
    done
    "$BENCH_BIN" max -n 20 -c 20 --start-rate 100 --factor 2 --max-steps 2 --duration 0.5 \
        --transport ws --label "$SERVER" "${urls[@]}" --out "$OUT" >/dev/null
    if tail -n 1 "$OUT" | grep -q '"scenario":"max"'; then echo "ok: $SERVER max"; else
        echo "FAILED: $SERVER max"
        failures=$((failures + 1))
    fi
    stop_server "$SERVER"
done
SERVER=

"$BENCH_BIN" report "$OUT" >/dev/null
passed=$((3 * 2 * 2 + 2 - failures))
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
