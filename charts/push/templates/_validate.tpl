{{/* Contradictory values the schema cannot word clearly: each fails the
     render with what to change (included by deployment.yaml). */}}
{{- define "push.validate" -}}
{{- with .Values.auth -}}
{{- if and .insecure .existingSecret -}}
{{- fail "auth.insecure: true turns auth off; it contradicts auth.existingSecret: set one of them (docs/security.md)" -}}
{{- end -}}
{{- if and .insecure .jwtPublicKeyKey -}}
{{- fail "auth.insecure: true turns auth off; it contradicts auth.jwtPublicKeyKey: set one of them" -}}
{{- end -}}
{{- if and .jwtPublicKeyKey (not .existingSecret) -}}
{{- fail "auth.jwtPublicKeyKey needs auth.existingSecret holding the PEM public key (the generated Secret has jwtSecret and publishKey only)" -}}
{{- end -}}
{{- if and .existingSecret (not (or .jwtSecretKey .publishKeyKey .jwtPublicKeyKey)) -}}
{{- fail "auth.existingSecret needs at least one of auth.jwtSecretKey, auth.publishKeyKey, auth.jwtPublicKeyKey (or auth.insecure: true without existingSecret)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.auth.insecure .Values.redis.auth.existingSecret -}}
{{- fail "redis.auth.insecure: true runs Redis without a password; it contradicts redis.auth.existingSecret: set one of them" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts (host and paths)" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs at least one Gateway in httpRoute.parentRefs (name, namespace, sectionName)" -}}
{{- end -}}
{{- end -}}
