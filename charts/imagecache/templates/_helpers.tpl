{{/*
Names, labels and small shared fragments. Each template below says what it returns.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "imagecache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: fullnameOverride, else release + chart name. */}}
{{- define "imagecache.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component names. */}}
{{- define "imagecache.operator.fullname" -}}
{{- printf "%s-operator" (include "imagecache.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "imagecache.agent.fullname" -}}
{{- printf "%s-agent" (include "imagecache.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "imagecache.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "imagecache.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the agent token, generated or given. */}}
{{- define "imagecache.agentToken.secretName" -}}
{{- default (printf "%s-agent-token" (include "imagecache.fullname" .)) .Values.agentToken.existingSecret -}}
{{- end -}}

{{/* The operator's Lease name: operator.settings.leaseName, else the operator's full name. */}}
{{- define "imagecache.leaseName" -}}
{{- default (include "imagecache.operator.fullname" .) .Values.operator.settings.leaseName -}}
{{- end -}}

{{/*
Settings as environment variables, the one place where values become env (as cert-manager renders
its `config:`). Call with (dict "prefix" "IMAGECACHE_OPERATOR_" "settings" $map): each key in
camelCase becomes PREFIX + SNAKE_CASE, in key order; an empty string or null is left out (the
process keeps its own default); a whole number is written without a decimal point or exponent.
*/}}
{{- define "imagecache.settingsEnv" -}}
{{- range $key, $value := .settings }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
- name: {{ printf "%s%s" $.prefix ($key | snakecase | upper) }}
  {{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
  value: {{ int64 $value | toString | quote }}
  {{- else }}
  value: {{ toString $value | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod's name and namespace from the downward API (POD_NAME, POD_NAMESPACE). */}}
{{- define "imagecache.downwardEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* The container image reference. */}}
{{- define "imagecache.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "imagecache.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "imagecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imagecache
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "imagecache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagecache.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "imagecache.componentLabels" -}}
{{ include "imagecache.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The pod security context of the restricted profile. */}}
{{- define "imagecache.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context of the restricted profile. */}}
{{- define "imagecache.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Checks across values that the schema cannot express; fails rendering with a clear line. */}}
{{- define "imagecache.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.settings.leaderElection) -}}
{{- fail "operator.replicas > 1 needs operator.settings.leaderElection=true (only one operator may be active)" -}}
{{- end -}}
{{- with .Values.operator.settings -}}
{{- if not (and (lt (float64 .leaseRetryPeriod) (float64 .leaseRenewDeadline)) (lt (float64 .leaseRenewDeadline) (float64 .leaseDuration))) -}}
{{- fail "operator.settings needs leaseRetryPeriod < leaseRenewDeadline < leaseDuration" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.operator.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs operator.service.enabled (the ServiceMonitor scrapes the operator through its Service)" -}}
{{- end -}}
{{- if .Values.agent.enabled -}}
{{- if not .Values.agent.upstream.url -}}
{{- fail "agent.upstream.url is required when agent.enabled=true (file:///dir, http(s)://base/ or glance+http(s)://host:port)" -}}
{{- end -}}
{{- if and (eq .Values.agent.cache.type "pvc") (ne .Values.agent.kind "StatefulSet") -}}
{{- fail "agent.cache.type=pvc needs agent.kind=StatefulSet (a DaemonSet cannot claim a volume per pod)" -}}
{{- end -}}
{{- if and (eq .Values.operator.settings.agentAuth "kubernetes") (ne .Values.agent.auth "kubernetes") -}}
{{- fail "operator.settings.agentAuth=kubernetes sends per-pod tokens that only agent.auth=kubernetes accepts: set both, or operator.settings.agentAuth=token-file" -}}
{{- end -}}
{{- if and (eq .Values.agent.auth "keystone") (not .Values.agent.openstack.cloud) -}}
{{- fail "agent.auth=keystone needs agent.openstack.cloud (the clouds.yaml entry whose credentials validate tokens)" -}}
{{- end -}}
{{- if and (eq .Values.agent.upstream.url "glance://") (not .Values.agent.openstack.cloud) -}}
{{- fail "agent.upstream.url=glance:// needs agent.openstack.cloud (its service catalog names the image endpoint)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Scrape settings shared by the ServiceMonitor and PodMonitor endpoints; call with
metrics.serviceMonitor. */}}
{{- define "imagecache.scrapeSettings" -}}
interval: {{ .interval }}
scrapeTimeout: {{ .scrapeTimeout }}
honorLabels: {{ .honorLabels }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
