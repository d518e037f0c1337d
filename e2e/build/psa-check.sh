#!/usr/bin/env bash
# Builds psa-check (e2e/build/psa-check: the Pod Security Standards checks of
# k8s.io/pod-security-admission, run on YAML files) once into
# $PUSH_E2E_CACHE/psa-check-<version>/ and prints the binary's path, so that
# from anywhere:
#
#   "$(e2e/build/psa-check.sh)" rendered.yaml      # exit 1 and one line per violation
#   helm template charts/push | "$(e2e/build/psa-check.sh)"
#
# <version> is the pod-security-admission version and a digest of the
# sources: an edit rebuilds, nothing else does. A build is kept only when its
# self-test passes (testdata/: a compliant Pod and Deployment admitted, a
# root Pod and a CronJob adding a capability refused with the expected lines).
# `psa-check.sh --test` runs the self-test again. Needs go; network: the Go
# module proxy, the first time.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/psa-check" && pwd)
CACHE=${PUSH_E2E_CACHE:-/var/cache/push-e2e}
PSA_VERSION=$(awk '$1 == "k8s.io/pod-security-admission" {print $2}' "$SRC/go.mod")
DIGEST=$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-12)
OUT=$CACHE/psa-check-$PSA_VERSION-$DIGEST
BIN=$OUT/psa-check

log() { printf '[psa-check] %s\n' "$*" >&2; }

self_test() { # BINARY
  local bin=$1 got rc
  "$bin" "$SRC/testdata/restricted.yaml" 2>/dev/null ||
    { log "self-test: the compliant objects were refused"; return 1; }
  set +e
  got=$("$bin" "$SRC/testdata/violating.yaml" 2>/dev/null)
  rc=$?
  set -e
  [ "$rc" = 1 ] || { log "self-test: exit $rc for the violating objects, want 1"; return 1; }
  [ "$got" = "$(cat "$SRC/testdata/violating.expected")" ] ||
    { log "self-test: unexpected violations:"; printf '%s\n' "$got" >&2; return 1; }
  # A spelling mistake in a field is an error, not a setting silently missing.
  if printf 'kind: Pod\nmetadata: {name: x}\nspec: {securityContex: {}}\n' | "$bin" 2>/dev/null; then
    log "self-test: a misspelt field was accepted"; return 1
  fi
}

build() {
  mkdir -p "$CACHE"
  # Several callers (chart tests, operator scripts) may ask at once: one builds.
  exec 9> "$CACHE/.psa-check.lock"
  flock 9
  [ -x "$BIN" ] && [ -f "$OUT/.complete" ] && return 0
  log "building $OUT (once per version)"
  rm -rf "$OUT.tmp"
  mkdir -p "$OUT.tmp"
  (cd "$SRC" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 go build -trimpath -ldflags "-s -w" \
    -o "$OUT.tmp/psa-check" .) >&2
  self_test "$OUT.tmp/psa-check"
  touch "$OUT.tmp/.complete"
  rm -rf "$OUT"
  mv "$OUT.tmp" "$OUT"
}

if [ ! -f "$OUT/.complete" ]; then build; fi
if [ "${1:-}" = --test ]; then
  self_test "$BIN"
  log "self-test passed ($BIN)"
fi
echo "$BIN"
