# shellcheck shell=bash
# Certificates and kubeconfigs of the test cluster, made with openssl into
# $PKI once and reused (sourced by e2e/cluster.sh; needs NODE_IP, NODE_NAME,
# SERVICE_IP, STATE, PKI). Every identity is a client certificate signed by
# one CA, as kubeadm does; the aggregation layer gets its own front-proxy CA.

pki_cert() { # name CN O ext-file-content [ca]
  local name=$1 cn=$2 org=$3 ext=$4 ca=${5:-ca}
  [ -s "$PKI/$name.crt" ] && return 0
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

pki_ca() { # name CN
  [ -s "$PKI/$1.crt" ] && return 0
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/$1.crt" 2>/dev/null
}

pki_kubeconfig() { # file user cert-name
  local file=$1 user=$2 cert=$3
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: push-e2e
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 < "$PKI/$cert.key")
contexts:
- name: push-e2e
  context: {cluster: push-e2e, user: $user}
current-context: push-e2e
EOF
  chmod 600 "$file"
}

pki_all() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  pki_ca ca push-e2e-ca
  pki_ca front-proxy-ca push-e2e-front-proxy-ca
  pki_cert apiserver kube-apiserver "" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,IP:$SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_cert kubelet-server "$NODE_NAME" "" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "$client"
  pki_cert admin kubernetes-admin system:masters "$client"
  pki_cert controller-manager system:kube-controller-manager "" "$client"
  pki_cert scheduler system:kube-scheduler "" "$client"
  pki_cert kubelet "system:node:$NODE_NAME" system:nodes "$client"
  pki_cert kube-proxy system:kube-proxy "" "$client"
  pki_cert front-proxy-client front-proxy-client "" "$client" front-proxy-ca
  if [ ! -s "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  pki_kubeconfig "$PKI/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  pki_kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler scheduler
  pki_kubeconfig "$PKI/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet
  pki_kubeconfig "$PKI/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  pki_kubeconfig "$STATE/kubeconfig" kubernetes-admin admin
}
