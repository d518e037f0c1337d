{{- define "push.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name; kept to 52 characters so "-redis-headless" suffixes still fit 63. */}}
{{- define "push.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "push.selectorLabels" -}}
app.kubernetes.io/name: {{ include "push.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "push.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "push.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: push
{{- end -}}

{{- define "push.serverSelectorLabels" -}}
{{ include "push.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "push.redisSelectorLabels" -}}
{{ include "push.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "push.redis" -}}{{ include "push.fullname" . }}-redis{{- end -}}
{{- define "push.redisHeadless" -}}{{ include "push.fullname" . }}-redis-headless{{- end -}}

{{/* Sentinel addresses of the chart's own Redis, comma-separated. */}}
{{- define "push.sentinelAddrs" -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.redis.replicas) -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc:26379" (include "push.redis" $) $i (include "push.redisHeadless" $) $.Release.Namespace) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* The --config YAML: chart-owned settings first, then .Values.config.
     /metrics has its own listener, so the public port never serves it. */}}
{{- define "push.configYaml" -}}
listen: "0.0.0.0:8080"
metrics_listen: "0.0.0.0:9090"
drain_period: {{ printf "%ds" (int .Values.drainPeriodSeconds) | quote }}
{{- with .Values.config }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Secret push-server reads its auth keys from: the user's, or the
     generated one. Empty when auth.insecure. */}}
{{- define "push.authSecret" -}}
{{- if not .Values.auth.insecure -}}
{{- default (printf "%s-auth" (include "push.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Secret and key of the chart's Redis password ("name key"); empty when
     redis.auth.insecure or the chart runs no Redis. */}}
{{- define "push.redisAuthSecret" -}}
{{- if and (eq .Values.broker "redis") (not .Values.redis.auth.insecure) -}}
{{- default (printf "%s-redis-auth" (include "push.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}
{{- end -}}
{{- define "push.redisAuthKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.key }}{{ else }}password{{ end -}}
{{- end -}}

{{/* Env of every Redis/Sentinel container: the password for the config
     (REDIS_PASSWORD, read by redis-boot.sh) and for redis-cli in probes and
     the boot script (REDISCLI_AUTH, never on a command line). */}}
{{- define "push.redisPasswordEnv" -}}
{{- $secret := include "push.redisAuthSecret" . -}}
{{- if $secret }}
{{- range $name := list "REDIS_PASSWORD" "REDISCLI_AUTH" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "push.redisAuthKey" $ }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A generated Secret value: the one already in the cluster (so upgrades
     keep it), else a new random one. Args: dict "ctx" "name" "key". */}}
{{- define "push.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* "true" when a prometheus-operator object is wanted: enabled true, or
     "auto" and the cluster serves monitoring.coreos.com/v1. Arg: list VALUE $. */}}
{{- define "push.monitoring" -}}
{{- $v := toString (index . 0) -}}
{{- $ctx := index . 1 -}}
{{- if or (eq $v "true") (and (eq $v "auto") ($ctx.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/* PromQL label matchers of this release's push-server pods. */}}
{{- define "push.podMatchers" -}}
namespace={{ .Release.Namespace | quote }},pod=~{{ printf "%s-[a-z0-9]+-[a-z0-9]+" (include "push.fullname" .) | quote }}
{{- end -}}

{{/* push-server's env: the broker's addresses, passwords and auth keys
     (Secrets only), PUSH_REQUIRE_AUTH unless auth.insecure. */}}
{{- define "push.serverEnv" -}}
{{- if eq .Values.broker "redis" }}
- name: PUSH_REDIS_SENTINEL
  value: {{ include "push.sentinelAddrs" . | quote }}
- name: PUSH_REDIS_MASTER_NAME
  value: push
{{- else if eq .Values.broker "externalRedis" }}
{{- with .Values.externalRedis }}
{{- if .url }}
- name: PUSH_REDIS_URL
  value: {{ .url | quote }}
{{- else if .urlSecret.name }}
- name: PUSH_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .urlSecret.name }}
      key: {{ .urlSecret.key }}
{{- else if .sentinels }}
- name: PUSH_REDIS_SENTINEL
  value: {{ join "," .sentinels | quote }}
- name: PUSH_REDIS_MASTER_NAME
  value: {{ .masterName | quote }}
{{- else if .cluster }}
- name: PUSH_REDIS_CLUSTER
  value: {{ join "," .cluster | quote }}
{{- else }}
{{- fail "broker: externalRedis needs externalRedis.url, urlSecret.name, sentinels or cluster" }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.broker "redis" }}
{{- with include "push.redisAuthSecret" . }}
- name: PUSH_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "push.redisAuthKey" $ }}
{{- end }}
{{- else if eq .Values.broker "externalRedis" }}
{{- with .Values.externalRedis.passwordSecret }}
{{- if .name }}
- name: PUSH_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.externalRedis.sentinelPasswordSecret }}
{{- if .name }}
- name: PUSH_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.auth }}
{{- if .insecure }}
{{- /* Explicitly open (auth.insecure): no keys, no PUSH_REQUIRE_AUTH. */}}
{{- else if .existingSecret }}
# Fail closed: push-server refuses to start unless one of the keys
# below resolved (they are optional one by one).
- name: PUSH_REQUIRE_AUTH
  value: "true"
{{- if .jwtSecretKey }}
- name: PUSH_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .jwtSecretKey }}
      optional: true
{{- end }}
{{- if .publishKeyKey }}
- name: PUSH_PUBLISH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .publishKeyKey }}
      optional: true
{{- end }}
{{- if .jwtPublicKeyKey }}
- name: PUSH_JWT_PUBLIC_KEY
  value: /etc/push/auth/jwt-public-key.pem
{{- end }}
{{- else }}
# The generated Secret (templates/secret.yaml); both keys required.
- name: PUSH_REQUIRE_AUTH
  value: "true"
- name: PUSH_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "push.authSecret" $ }}
      key: jwtSecret
- name: PUSH_PUBLISH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "push.authSecret" $ }}
      key: publishKey
{{- end }}
{{- end }}
{{- end -}}
