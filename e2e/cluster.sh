#!/usr/bin/env bash
# The project's single-node Kubernetes, built from upstream sources (see
# docs/e2e.md). A stable interface, used by the e2e tests and by hand:
#
#   e2e/cluster.sh up       build or reuse binaries and images, start etcd, the
#                           control plane, containerd, the kubelet, kube-proxy
#                           and CoreDNS; exit 0 once the node is Ready, CoreDNS
#                           answers and the images are loaded. Idempotent.
#   e2e/cluster.sh images   the loaded images, one name=reference a line
#   e2e/cluster.sh env      shell exports: KUBECONFIG, PATH (kubectl, helm)
#   e2e/cluster.sh down     stop everything it started; remove its mounts,
#                           network namespaces, interfaces and iptables rules
#
# Admin kubeconfig: e2e/.state/kubeconfig. Logs: e2e/.state/logs/. Built
# binaries: $PUSH_E2E_CACHE (default /var/cache/push-e2e), one folder per
# version. Runtime data: $PUSH_E2E_RUN (default /var/lib/push-e2e).
set -euo pipefail

E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$E2E")
# shellcheck source=versions.env
. "$E2E/versions.env"
CACHE=${PUSH_E2E_CACHE:-/var/cache/push-e2e}
RUN=${PUSH_E2E_RUN:-/var/lib/push-e2e}
STATE=$E2E/.state
LOGS=$STATE/logs
PKI=$RUN/pki
PIDS=$RUN/pids
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# Addresses: the node is the gateway of its own pod bridge, so every address
# the cluster uses lives on this machine (docs/e2e.md, "Network").
NODE_NAME=push-e2e
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
BRIDGE=push-br0
CONTAINERD_SOCK=$RUN/containerd/containerd.sock

KUBE_BIN=$CACHE/kubernetes-$KUBE_VERSION
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION
ADAPTER_BIN=$CACHE/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION
LPP_BIN=$CACHE/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION
# Where local-path-provisioner makes the PVCs' folders (removed by `down`).
LOCAL_PATH=$RUN/local-path
PAUSE_TAG=$(cat "$E2E/build/pause/main.go" "$E2E/build/pause/go.mod" | sha256sum | cut -c1-12)
PAUSE_BIN=$CACHE/pause-$PAUSE_TAG

# shellcheck source=lib/pki.sh
. "$E2E/lib/pki.sh"

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.5 s.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# ---------------------------------------------------------------- packages

DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack
  socat ethtool iproute2 openssl busybox-static redis-server redis-sentinel
  prometheus dnsutils binutils util-linux)

ensure_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- builds

# go_build OUTDIR MODULE-DIR LDFLAGS PACKAGE[=NAME]...: builds the packages of a
# wrapper module into OUTDIR in one `go build` (shared packages compile once,
# links run in parallel), once per version: the folder name.
go_build() {
  local out=$1 dir=$2 ldflags=$3
  shift 3
  [ -f "$out/.complete" ] && return 0
  log "building $(basename "$out") (once per version; minutes)"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  local pkgs=() spec
  for spec in "$@"; do pkgs+=("${spec%%=*}"); done
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -pgo=off \
    -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}")
  for spec in "$@"; do
    if [[ $spec == *=* ]]; then
      local built
      # go names a binary after the last path element that is not a /vN.
      built=$(basename "$(sed -E 's#/v[0-9]+$##' <<< "${spec%%=*}")")
      [ "$built" = . ] && built=$(basename "$dir")
      [ "$built" = "${spec#*=}" ] || mv "$out.tmp/$built" "$out.tmp/${spec#*=}"
    fi
  done
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
}

build_binaries() {
  local minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  local v="k8s.io/component-base/version" c="k8s.io/client-go/pkg/version"
  local stamp="-s -w"
  for p in $v $c; do
    stamp+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go_build "$KUBE_BIN" "$E2E/build/kubernetes" "$stamp" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
  go_build "$ETCD_BIN" "$E2E/build/etcd" "-s -w" go.etcd.io/etcd/server/v3=etcd
  go_build "$COREDNS_BIN" "$E2E/build/coredns" "-s -w" github.com/coredns/coredns
  go_build "$ADAPTER_BIN" "$E2E/build/prometheus-adapter" "-s -w" \
    sigs.k8s.io/prometheus-adapter/cmd/adapter=prometheus-adapter
  go_build "$LPP_BIN" "$E2E/build/local-path-provisioner" "-s -w" github.com/rancher/local-path-provisioner
  go_build "$PAUSE_BIN" "$E2E/build/pause" "-s -w" .=pause
  mkdir -p "$STATE/bin"
  ln -sfn "$KUBE_BIN/kubectl" "$STATE/bin/kubectl"
  [ -x "$ROOT/.tools/bin/helm" ] && ln -sfn "$ROOT/.tools/bin/helm" "$STATE/bin/helm"
  return 0
}

# ---------------------------------------------------------------- images

# The release binaries of the workspace (what the Dockerfiles ship).
build_release() {
  if [ -z "${PUSH_E2E_SKIP_CARGO:-}" ]; then
    log "cargo build --release (reuses the target dir)"
    (cd "$ROOT" && cargo build --release --locked --workspace -q)
  fi
}

# image NAME TAG ARGS...: builds localhost/push-e2e/NAME:TAG ("{digest}": the
# content's digest) and imports it unless containerd has it; records name=ref.
image() {
  local name=$1 tag=$2
  shift 2
  local tmp ref
  tmp=$(mktemp -d)
  ref=$(python3 "$E2E/lib/mkimage.py" --name "localhost/push-e2e/$name:$tag" --out "$tmp/image.tar" "$@")
  if ! ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qx "$ref"; then
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$tmp/image.tar" >/dev/null
    log "image $ref imported"
  fi
  rm -rf "$tmp"
  echo "$name=$ref" >> "$STATE/images.tmp"
}

build_images() {
  build_release
  local rel=$CARGO_TARGET/release
  : > "$STATE/images.tmp"
  image pause "$PAUSE_TAG" --bin "$PAUSE_BIN/pause:/pause" --entrypoint '["/pause"]' --user 65535:65535
  image coredns "{digest}" --bin "$COREDNS_BIN/coredns:/coredns" --entrypoint '["/coredns"]' --user 0:0
  image prometheus-adapter "{digest}" --bin "$ADAPTER_BIN/prometheus-adapter:/adapter" --entrypoint '["/adapter"]'
  image prometheus "{digest}" --bin /usr/bin/prometheus --dir prometheus --entrypoint '["/usr/bin/prometheus"]'
  image local-path-provisioner "{digest}" --bin "$LPP_BIN/local-path-provisioner:/usr/bin/local-path-provisioner" \
    --entrypoint '["/usr/bin/local-path-provisioner"]'
  # local-path-provisioner's helper pods: mkdir/rm -rf of host folders, as root.
  image busybox "{digest}" --busybox --entrypoint '["/bin/sh"]' --user 0:0
  image kubectl "{digest}" --busybox --bin "$KUBE_BIN/kubectl:/usr/bin/kubectl" --entrypoint '["kubectl"]'
  image redis "{digest}" --busybox --bin /usr/bin/redis-server --bin /usr/bin/redis-cli --bin /usr/bin/getent \
    --link usr/bin/redis-sentinel:redis-server --dir data --entrypoint '["redis-server"]' --user 0:0
  image push-server "{digest}" --strip --bin "$rel/push-server:/usr/local/bin/push-server" \
    --entrypoint '["/usr/local/bin/push-server"]'
  image push-operator "{digest}" --strip --bin "$rel/push-operator:/usr/local/bin/push-operator" \
    --entrypoint '["/usr/local/bin/push-operator"]'
  mv "$STATE/images.tmp" "$STATE/images"
  # The references the product defaults to (the operator's and the charts'
  # release images, Redis) name these builds too, as `kind load` would do:
  # a PushCluster or chart with default images runs here unchanged.
  local version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
  alias_image push-server "ghcr.io/push-dev/push-server:$version"
  alias_image push-operator "ghcr.io/push-dev/push-operator:$version"
  alias_image redis docker.io/library/redis:7.4
}

alias_image() { # NAME REFERENCE
  local ref
  ref=$(sed -n "s/^$1=//p" "$STATE/images")
  ctr -a "$CONTAINERD_SOCK" -n k8s.io images tag --force "$ref" "$2" >/dev/null
}

# ---------------------------------------------------------------- processes

# write_if_changed FILE < content: a running kube-proxy exits when its config
# file changes, so a second `up` must leave identical files alone.
write_if_changed() {
  local tmp
  tmp=$(mktemp)
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

running() { [ -s "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: runs COMMAND in its own session, logs to LOGS/NAME.log.
start() {
  local name=$1
  shift
  running "$name" && return 0
  log "starting $name"
  setsid "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

setup_host() {
  mkdir -p "$STATE" "$LOGS" "$PIDS" "$RUN"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Service addresses never leave the machine, even before kube-proxy's rules.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
}

start_containerd() {
  mkdir -p "$RUN/containerd" "$RUN/cni/net.d"
  write_if_changed "$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  # This VM refuses a negative oom_score_adj (docs/e2e.md): the kubelet asks
  # -998 for every sandbox, so containerd clamps to its own score instead.
  restrict_oom_score_adj = true
  sandbox_image = "localhost/push-e2e/pause:$PAUSE_TAG"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
  cat > "$RUN/cni/net.d/10-push-e2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "push-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$RUN/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  start containerd containerd --config "$RUN/containerd/config.toml"
  wait_for "containerd" 60 ctr -a "$CONTAINERD_SOCK" version
}

start_control_plane() {
  start etcd "$ETCD_BIN/etcd" --name push-e2e --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster push-e2e=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
  wait_for "etcd" 60 curl -fsS http://127.0.0.1:2381/health
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --enable-aggregator-routing=true --profiling=false --v=1
  wait_for "kube-apiserver /readyz" 180 kubectl get --raw /readyz
  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --leader-elect=false \
    --cluster-name push-e2e \
    --horizontal-pod-autoscaler-sync-period 5s --profiling=false --v=1
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_node() {
  mkdir -p "$RUN/kubelet"
  echo "nameserver 127.0.0.1" > "$RUN/resolv.conf"
  write_if_changed "$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $RUN/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
maxPods: 110
podPidsLimit: -1
rotateCertificates: false
EOF
  start kubelet "$KUBE_BIN/kubelet" --config "$RUN/kubelet/config.yaml" \
    --kubeconfig "$PKI/kubelet.kubeconfig" --root-dir "$RUN/kubelet" \
    --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
  write_if_changed "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
nodePortAddresses: [$NODE_IP/32]
EOF
  start kube-proxy "$KUBE_BIN/kube-proxy" --config "$RUN/kube-proxy.yaml" --v=1
  wait_for "node $NODE_NAME Ready" 180 \
    bash -c "'$KUBE_BIN/kubectl' --kubeconfig '$STATE/kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}

start_addons() {
  local coredns_image
  coredns_image=$(sed -n 's/^coredns=//p' "$STATE/images")
  sed -e "s#@COREDNS_IMAGE@#$coredns_image#" -e "s#@DNS_IP@#$DNS_IP#" \
    "$E2E/manifests/addons.yaml" | kubectl apply --server-side --field-manager push-e2e -f - >/dev/null
  mkdir -p "$LOCAL_PATH"
  sed -e "s#@PROVISIONER_IMAGE@#$(sed -n 's/^local-path-provisioner=//p' "$STATE/images")#" \
    -e "s#@HELPER_IMAGE@#$(sed -n 's/^busybox=//p' "$STATE/images")#" -e "s#@LOCAL_PATH@#$LOCAL_PATH#" \
    "$E2E/manifests/storage.yaml" | kubectl apply --server-side --field-manager push-e2e -f - >/dev/null
  kubectl -n kube-system rollout status deploy/coredns --timeout 180s >/dev/null
  kubectl -n local-path-storage rollout status deploy/local-path-provisioner --timeout 180s >/dev/null
  wait_for "CoreDNS answering on $DNS_IP" 120 \
    bash -c "dig +short +time=1 +tries=1 @$DNS_IP kubernetes.default.svc.cluster.local | grep -qx $SERVICE_IP"
}

# The CRDs of Gateway API and of the Prometheus Operator, from their Go modules'
# sources: HTTPRoute, PodMonitor, PrometheusRule… are then validated by the
# real API server (no controller for them runs here).
module_dir() { # MODULE@VERSION
  (cd "$E2E/build/pause" && go mod download -json "$1") | jq -er .Dir
}

install_crds() {
  local gw po files=()
  gw=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  po=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  files+=("$gw"/config/crd/standard/gateway.networking.k8s.io_*.yaml)
  for kind in podmonitors servicemonitors prometheusrules; do
    files+=("$po/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml")
  done
  local f args=()
  for f in "${files[@]}"; do args+=(-f "$f"); done
  kubectl apply --server-side --force-conflicts --field-manager push-e2e "${args[@]}" >/dev/null
  kubectl wait --for condition=Established --timeout 60s \
    crd/httproutes.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io \
    crd/podmonitors.monitoring.coreos.com crd/servicemonitors.monitoring.coreos.com \
    crd/prometheusrules.monitoring.coreos.com >/dev/null
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "needs root (containerd, kubelet, iptables)"
  ensure_packages
  build_binaries
  # What a killed run left behind (mounts, pods' network namespaces, a stale
  # etcd) is cleared first: `up` after a crash starts clean, `up` on a live
  # cluster changes nothing.
  if [ -d "$RUN" ] && ! running kube-apiserver; then
    log "clearing what a stopped cluster left in $RUN"
    cmd_down
  fi
  setup_host
  pki_all
  start_containerd
  build_images
  start_control_plane
  start_node
  start_addons
  install_crds
  log "cluster up: KUBECONFIG=$STATE/kubeconfig ($(kubectl version -o json | jq -r .serverVersion.gitVersion))"
}

# ---------------------------------------------------------------- down

stop_one() {
  local name=$1 pid
  [ -s "$PIDS/$name.pid" ] || return 0
  pid=$(cat "$PIDS/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "needs root"
  stop_one kubelet
  # Every container of the cluster, so that no shim or pod process outlives it.
  if running containerd; then
    local ids
    ids=$(ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true)
    for id in $ids; do ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    stop_one "$name"
  done
  pkill -KILL -f "containerd-shim-runc-v2 -namespace k8s.io -address $CONTAINERD_SOCK" 2>/dev/null || true
  # Mounts below the runtime folder (volumes, overlay roots, shm), deepest first.
  awk -v run="$RUN" '$2 ~ "^"run {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  # Network namespaces the CNI plugins made for our pods (cni-<uuid>).
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  [ -x "$KUBE_BIN/kube-proxy" ] && "$KUBE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # What kube-proxy --cleanup leaves: the kubelet's chains (KUBE-FIREWALL,
  # KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and the CNI plugins' (CNI-*), in
  # every table, IPv4 and IPv6: first the rules that jump to them, then the chains.
  local ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      "$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-A" && $2 !~ /^(KUBE-|CNI-)/ && / -j (KUBE-|CNI-)/' |
        while read -r rule; do
          # -S quotes comments the way a shell reads them.
          eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true
        done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  rm -rf "$RUN"
  rm -f "$STATE/images" "$STATE/kubeconfig"
  log "cluster down"
}

cmd_images() {
  [ -s "$STATE/images" ] || die "no images loaded: run e2e/cluster.sh up"
  cat "$STATE/images"
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=$STATE/bin:\$PATH"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  images) cmd_images ;;
  env) cmd_env ;;
  build) ensure_packages; build_binaries ;;
  *) echo "usage: $0 up|down|images|env|build" >&2; exit 2 ;;
esac
