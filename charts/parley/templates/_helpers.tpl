{{- define "parley.fullname" -}}
{{- if contains "parley" .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-parley" .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "parley.labels" -}}
app.kubernetes.io/name: parley
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: parley
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "parley.selector" -}}
app.kubernetes.io/name: parley
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "parley.image" -}}
{{ .root.Values.image.registry }}/{{ .name }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Pod-level hardening shared by every Parley pod. */}}
{{- define "parley.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "parley.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly | default true }}
capabilities:
  drop: [ALL]
{{- end -}}

{{/* PARLEY_REDIS_URL as a container env entry: always from a Secret, as it carries the
password (the release's Secret, or the external Redis's urlSecret). */}}
{{- define "parley.redisUrlEnv" -}}
{{- $secret := printf "%s-secrets" (include "parley.fullname" .) -}}
{{- $key := "redis-url" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.urlSecret.name -}}
{{- $secret = .Values.redis.urlSecret.name -}}{{- $key = .Values.redis.urlSecret.key -}}
{{- end -}}
{name: PARLEY_REDIS_URL, valueFrom: {secretKeyRef: {name: {{ $secret | quote }}, key: {{ $key | quote }}}}}
{{- end -}}

{{/* The bundled broker by its namespace-qualified name (the operator's broadcast ingests run in
other namespaces); kafka.yaml advertises the same name. */}}
{{- define "parley.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}{{ include "parley.fullname" . }}-kafka.{{ .Release.Namespace }}.svc:9092{{- else -}}{{ .Values.kafka.bootstrap }}{{- end -}}
{{- end -}}

{{- define "parley.operatorRules" }}
  - apiGroups: [parley.dev]
    resources: [meetings, broadcasts]
    verbs: [get, list, watch, patch]
  - apiGroups: [parley.dev]
    resources: [meetings/status, broadcasts/status]
    verbs: [get, patch]
  - apiGroups: [parley.dev]
    resources: [meetings/finalizers, broadcasts/finalizers]
    verbs: [update]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [get, patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, patch]
  - apiGroups: [""]
    resources: [services]
    verbs: [get, create, patch, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create]
  # reads media-node reports; also holds what it grants a Broadcast's edges (RBAC forbids
  # granting more than one has): kube-operator/broadcast_access.py
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [list, get, create, update, patch]
  # each Broadcast's ingest and edge identities (ServiceAccount, Role, RoleBinding)
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [get, create, patch, delete]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [roles, rolebindings]
    verbs: [get, create, patch, delete]
{{- end -}}

{{/* Where browsers reach /live for broadcasts: broadcast.url, else publicUrl (the pages of
signaling and the operator's status.playback use the same base). */}}
{{- define "parley.broadcastUrl" -}}
{{- .Values.broadcast.url | default .Values.publicUrl | trimSuffix "/" -}}
{{- end -}}
