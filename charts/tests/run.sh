#!/usr/bin/env bash
# Chart checks run by `make test-charts` (mk/charts.mk installs the tools):
#  1. helm lint --strict of both charts, with the default values and with
#     every charts/<chart>/ci/*.yaml;
#  2. helm template of the same (and of the push chart's defaults with the
#     Prometheus Operator's API served), every rendered object validated with
#     kubernetes-validate --strict (unknown fields are errors), the Pod
#     Security "restricted" (latest) check of k8s.io/pod-security-admission
#     (psa-check, built by e2e/build/psa-check.sh) and the invariants of
#     check_rendered.py;
#  3. the push chart's rendered config.yaml and env started by the real
#     push-server (/metrics on the metrics port only; with a Secret holding
#     none of the auth keys it must refuse to start), the operator chart's
#     args and env parsed by the real push-operator;
#  4. every file in tests/bad/<chart>/ rejected, with the error it names;
#  5. the chart CRD equal to `push-operator crd` and to crds/pushcluster.yaml,
#     the prometheus-adapter rule identical in both charts;
#  6. the Redis boot script of the push chart (redis_boot_test.sh);
#  7. HTTPRoute, ServiceMonitor and PrometheusRule validated strictly
#     against their real CRDs (crd_validate.py; Gateway API and Prometheus
#     Operator modules at the versions of e2e/versions.env);
#  8. the PrometheusRule through `promtool check rules` and `promtool test
#     rules` (prometheus-rules-test.yaml), the dashboard JSON, and every
#     metric they query exported by the real push-server (monitoring_check.py).
# Usage: run.sh HELM VENV PUSH_OPERATOR_BIN PUSH_SERVER_BIN [PSA_CHECK]
# (PSA_CHECK defaults to the binary e2e/build/psa-check.sh builds.)
set -euo pipefail
helm=$1 venv=$2 operator_bin=$3 server_bin=$4
charts=$(cd "$(dirname "$0")/.." && pwd)
root=$(dirname "$charts")
psa=${5:-$(bash "$root/e2e/build/psa-check.sh")}
# The real CRDs of the kinds Kubernetes has no schema for, from the Go
# modules (and versions) the e2e cluster installs them from.
# shellcheck source=../../e2e/versions.env
. "$root/e2e/versions.env"
module_dir() { (cd "$root/e2e/build/pause" && go mod download -json "$1") | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
gw_dir=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
po_dir=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
crds=("$gw_dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml")
for kind in podmonitors servicemonitors prometheusrules; do
  crds+=("$po_dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml")
done
k8s_version=1.33.0
tmp=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0 passed=0
pass() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failures=$((failures + 1)); }

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A P-256 public key standing in for a Secret's jwtPublicKey.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | openssl pkey -pubout >"$tmp/jwt.pem"

# Starts push-server with a rendered config file and the Deployment's env
# (server_env.py: Secret values replaced by stand-ins), on free ports instead
# of 8080/9090. Passes when /healthz answers, /metrics answers on the metrics
# port (saved to $tmp/metrics.txt) and the public port refuses it (404).
server_accepts() { # CONFIG_FILE RENDERED
  local port mport log=$tmp/server.log code
  port=$(free_port); mport=$(free_port)
  mapfile -t srv_env < <("$venv/bin/python" "$charts/tests/server_env.py" "$2" "$tmp/jwt.pem")
  env -i PATH="$PATH" HOME="$tmp" "${srv_env[@]}" "$server_bin" --config "$1" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
      if curl -fsS "http://127.0.0.1:$mport/metrics" >"$tmp/metrics.txt" && [ "$code" = 404 ]; then
        kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
        return 0
      fi
      echo "metrics port: $(head -c 200 "$tmp/metrics.txt"); public port /metrics: HTTP $code"
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=
  cat "$log"
  return 1
}

# Fail closed: the same start with the Secret-sourced auth keys missing (an
# existingSecret holding none of them) must exit non-zero, never serve.
server_refuses_without_keys() { # CONFIG_FILE RENDERED
  local port log=$tmp/server-nokeys.log rc
  port=$(free_port)
  mapfile -t srv_env < <("$venv/bin/python" "$charts/tests/server_env.py" "$2" "$tmp/jwt.pem" --no-secrets)
  set +e
  env -i PATH="$PATH" HOME="$tmp" "${srv_env[@]}" timeout 20 "$server_bin" --config "$1" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$(free_port)" >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
    grep -m1 -i 'auth\|key' "$log" | cut -c1-120
    return 0
  fi
  cat "$log"
  return 1
}

for chart in push-operator push; do
  dir=$charts/$chart
  extra=(); [ "$chart" = push ] && extra=(@monitoring)
  for values in "" "${extra[@]}" "$dir"/ci/*.yaml; do
    label="$chart ${values:+$(basename "$values")}"; label=${label% }
    [ -n "$values" ] || label="$chart (defaults)"
    if [ "$values" = @monitoring ]; then
      # "auto" monitoring objects: rendered when the API is served.
      label="$chart (defaults, monitoring.coreos.com/v1 served)"
      args=(--api-versions monitoring.coreos.com/v1); lint_args=()
    else
      args=(${values:+-f "$values"}); lint_args=("${args[@]}")
    fi
    # What the values file opens deliberately (check_rendered.py).
    case "$(basename "${values:-defaults}")" in
      insecure-*) export EXPECT_AUTH=off EXPECT_REDIS_AUTH=off EXPECT_REDIS_POLICY=off ;;
      *) export EXPECT_AUTH=on EXPECT_REDIS_AUTH=on EXPECT_REDIS_POLICY=on ;;
    esac
    if "$helm" lint --strict "$dir" "${lint_args[@]}" >"$tmp/lint.log" 2>&1; then
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
    if grep -v -E "Couldn't find schema for kind (ServiceMonitor|ScaledObject|PrometheusRule|HTTPRoute) " "$tmp/kv.log" | grep -q .; then
      cat "$tmp/kv.log"; bad "kubernetes-validate --strict $label"
    else
      pass "kubernetes-validate --strict ($k8s_version): $(grep -c '^kind:' "$out") objects of $label"
    fi
    if grep -qE '^kind: (HTTPRoute|ServiceMonitor|PodMonitor|PrometheusRule)$' "$out"; then
      if "$venv/bin/python" "$charts/tests/crd_validate.py" "$out" "${crds[@]}" >"$tmp/crd.log"; then
        pass "$(sed 's/^ok *//' "$tmp/crd.log") (Gateway API $GATEWAY_API_VERSION, Prometheus Operator $PROMETHEUS_OPERATOR_VERSION): $label"
      else
        cat "$tmp/crd.log"; bad "objects of $label invalid against their CRDs"
      fi
    fi
    if "$psa" "$out" >"$tmp/psa.log" 2>&1; then
      pass "Pod Security restricted (latest, psa-check): every pod of $label"
    else
      cat "$tmp/psa.log"
      bad "Pod Security restricted (psa-check) refuses pods of $label${chart:+ (charts/$chart)}"
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
      if server_accepts "$tmp/config.yaml" "$out"; then
        pass "push-server starts with the rendered config.yaml and env of $label, /metrics on the metrics port only"
        [ "$values" = "" ] && cp "$tmp/metrics.txt" "$tmp/metrics-defaults.txt"
      else
        bad "push-server refused the rendered config.yaml or env of $label (or served /metrics wrong)"
      fi
      if [ "$EXPECT_AUTH" = on ]; then
        if why=$(server_refuses_without_keys "$tmp/config.yaml" "$out"); then
          pass "push-server of $label refuses to start without an auth key ($why)"
        else
          echo "$why"; bad "push-server of $label started without any auth key (fails open)"
        fi
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
  diff "$tmp/crd.yaml" "$charts/push-operator/crds/pushcluster.yaml" | head -20 || true
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
mon=$tmp/monitoring
mkdir -p "$mon"
if "$helm" template push-test "$charts/push" -n realtime --api-versions monitoring.coreos.com/v1 \
     --set metrics.grafanaDashboard.enabled=true >"$mon/rendered.yaml" 2>"$mon/tpl.log" &&
   "$venv/bin/python" "$charts/tests/monitoring_check.py" "$mon/rendered.yaml" \
     "$charts/push/files/grafana-dashboard.json" "$tmp/metrics-defaults.txt" "$mon" \
     "$("$server_bin" --help | grep -A3 -- '--max-connections ' | sed -n 's/.*\[default: \([0-9]*\)\].*/\1/p')" >"$mon/check.log"; then
  pass "$(sed 's/^ok *//' "$mon/check.log")"
  cp "$charts/tests/prometheus-rules-test.yaml" "$mon/"
  if promtool check rules "$mon/rules.yaml" >"$mon/promtool.log" 2>&1; then
    pass "promtool check rules: $(grep -o '[0-9]* rules found' "$mon/promtool.log")"
  else
    cat "$mon/promtool.log"; bad "promtool check rules of the push chart's PrometheusRule"
  fi
  if promtool test rules "$mon/prometheus-rules-test.yaml" >"$mon/promtool-test.log" 2>&1; then
    pass "promtool test rules: each alert fires on its condition only ($(grep -c '^  - name:' "$charts/tests/prometheus-rules-test.yaml") groups)"
  else
    cat "$mon/promtool-test.log"; bad "promtool test rules (charts/tests/prometheus-rules-test.yaml)"
  fi
else
  cat "$mon/tpl.log" "$mon/check.log" 2>/dev/null; bad "monitoring objects of the push chart"
fi
if bash "$charts/tests/redis_boot_test.sh"; then passed=$((passed + 1)); else bad "redis-boot.sh"; fi

echo "charts: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
