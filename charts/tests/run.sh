#!/usr/bin/env bash
# Chart checks run by `make test-charts` (mk/charts.mk installs the tools):
#  1. helm lint --strict of both charts, with the default values and with
#     every charts/<chart>/ci/*.yaml;
#  2. helm template of the same, every rendered object validated with
#     kubernetes-validate --strict (unknown fields are errors) and the
#     invariants of check_rendered.py;
#  3. the push chart's rendered config.yaml started by the real push-server,
#     the operator chart's args and env parsed by the real push-operator;
#  4. every file in tests/bad/<chart>/ rejected, with the error it names;
#  5. the chart CRD equal to `push-operator crd` and to crds/pushcluster.yaml,
#     the prometheus-adapter rule identical in both charts;
#  6. the Redis boot script of the push chart (redis_boot_test.sh).
# Usage: run.sh HELM VENV PUSH_OPERATOR_BIN PUSH_SERVER_BIN
set -euo pipefail
helm=$1 venv=$2 operator_bin=$3 server_bin=$4
charts=$(cd "$(dirname "$0")/.." && pwd)
root=$(dirname "$charts")
k8s_version=1.33.0
tmp=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0 passed=0
pass() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failures=$((failures + 1)); }

# Starts push-server on a free port with a rendered config file; passes when
# /healthz answers 200, i.e. the server accepted every setting of the file.
server_accepts() { # CONFIG_FILE
  local port log=$tmp/server.log
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env -u PUSH_REDIS_URL "$server_bin" --config "$1" --listen "127.0.0.1:$port" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=
  cat "$log"
  return 1
}

for chart in push-operator push; do
  dir=$charts/$chart
  for values in "" "$dir"/ci/*.yaml; do
    label="$chart ${values:+$(basename "$values")}"; label=${label% }
    [ -n "$values" ] || label="$chart (defaults)"
    args=(${values:+-f "$values"})
    if "$helm" lint --strict "$dir" "${args[@]}" >"$tmp/lint.log" 2>&1; then
      pass "helm lint --strict $label"
    else
      cat "$tmp/lint.log"; bad "helm lint --strict $label"; continue
    fi
    out=$tmp/rendered.yaml
    if ! "$helm" template push-test "$dir" -n realtime --include-crds "${args[@]}" >"$out" 2>"$tmp/tpl.log"; then
      cat "$tmp/tpl.log"; bad "helm template $label"; continue
    fi
    # --quiet prints failures and warnings only. The kinds without a
    # Kubernetes schema (ServiceMonitor, KEDA's ScaledObject) are checked by
    # check_rendered.py instead.
    "$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$out" >"$tmp/kv.log" 2>&1 || true
    if grep -v -E "Couldn't find schema for kind (ServiceMonitor|ScaledObject) " "$tmp/kv.log" | grep -q .; then
      cat "$tmp/kv.log"; bad "kubernetes-validate --strict $label"
    else
      pass "kubernetes-validate --strict ($k8s_version): $(grep -c '^kind:' "$out") objects of $label"
    fi
    if CONFIG_OUT=$tmp/config.yaml "$venv/bin/python" "$charts/tests/check_rendered.py" "$chart" "$out" >"$tmp/inv.log"; then
      pass "$(cat "$tmp/inv.log" | sed 's/^ok *//') of $label"
    else
      cat "$tmp/inv.log"; bad "invariants of $label"
    fi
    if [ "$chart" = push-operator ]; then
      # The real binary parses the chart's args and env; with no cluster it
      # then stops at "kubernetes client" (a clap error would exit 2 first).
      "$venv/bin/python" "$charts/tests/operator_args.py" "$out" >"$tmp/op-args"
      mapfile -t op_env < <(sed '/^--$/q' "$tmp/op-args" | sed '$d' | grep -v '^PUSH_OPERATOR_LISTEN=')
      mapfile -t op_args < <(sed '1,/^--$/d' "$tmp/op-args")
      if env -i PATH="$PATH" HOME="$tmp" KUBECONFIG=/nonexistent "${op_env[@]}" \
           PUSH_OPERATOR_LISTEN=127.0.0.1:0 timeout 20 "$operator_bin" "${op_args[@]}" >"$tmp/op.log" 2>&1; then
        bad "push-operator ran without a cluster?"
      elif grep -q "kubernetes client" "$tmp/op.log"; then
        pass "push-operator accepts the args and env of $label (${op_args[*]})"
      else
        cat "$tmp/op.log"; bad "push-operator refused the args or env of $label"
      fi
    fi
    if [ "$chart" = push ]; then
      if server_accepts "$tmp/config.yaml"; then
        pass "push-server starts with the rendered config.yaml of $label"
      else
        bad "push-server refused the rendered config.yaml of $label"
      fi
    fi
  done

  for f in "$charts"/tests/bad/"$chart"/*.yaml; do
    want=$(sed -n 's/^# expect: //p' "$f")
    if "$helm" template push-test "$dir" -f "$f" >"$tmp/bad.log" 2>&1; then
      bad "$chart accepted bad values $(basename "$f")"
    elif grep -Eq -- "$want" "$tmp/bad.log"; then
      pass "$chart rejects $(basename "$f" .yaml) ($(grep -m1 -E -- "$want" "$tmp/bad.log" | sed 's/^ *//' | cut -c1-90))"
    else
      cat "$tmp/bad.log"; bad "$chart rejected $(basename "$f") without naming /$want/"
    fi
  done
done

"$operator_bin" crd >"$tmp/crd.yaml"
if cmp -s "$tmp/crd.yaml" "$charts/push-operator/crds/pushcluster.yaml"; then
  pass "charts/push-operator/crds/pushcluster.yaml equals \`push-operator crd\`"
else
  diff "$tmp/crd.yaml" "$charts/push-operator/crds/pushcluster.yaml" | head -20
  bad "charts/push-operator/crds/pushcluster.yaml differs from \`push-operator crd\` (make charts-crd)"
fi
if cmp -s "$charts/push-operator/crds/pushcluster.yaml" "$root/crds/pushcluster.yaml"; then
  pass "chart CRD equals crds/pushcluster.yaml"
else
  bad "chart CRD differs from crds/pushcluster.yaml"
fi
if cmp -s "$charts/push/files/prometheus-adapter-rules.yaml" "$charts/push-operator/files/prometheus-adapter-rules.yaml"; then
  pass "prometheus-adapter rule identical in both charts"
else
  bad "prometheus-adapter rule differs between the charts"
fi
if bash "$charts/tests/redis_boot_test.sh"; then passed=$((passed + 1)); else bad "redis-boot.sh"; fi

echo "charts: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
