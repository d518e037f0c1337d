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

{{/* The --config YAML: chart-owned settings first, then .Values.config. */}}
{{- define "push.configYaml" -}}
listen: "0.0.0.0:8080"
drain_period: {{ printf "%ds" (int .Values.drainPeriodSeconds) | quote }}
{{- with .Values.config }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Container securityContext of Pod Security Standard "restricted". */}}
{{- define "push.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
