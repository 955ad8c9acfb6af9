{{/* Names, labels and small computed values shared by every template. */}}

{{- define "vibration-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already holds the chart name. */}}
{{- define "vibration-edge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<suffix>, kept to one DNS label. Call with (list . "suffix"). */}}
{{- define "vibration-edge.componentName" -}}
{{- $ctx := index . 0 }}
{{- printf "%s-%s" (include "vibration-edge.fullname" $ctx | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" }}
{{- end }}

{{- define "vibration-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component. Call with (list . "component"). */}}
{{- define "vibration-edge.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "vibration-edge.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Standard labels of one component. Call with (list . "component"). */}}
{{- /* commonLabels may set app.kubernetes.io/part-of or any label of its own; the selector
labels and helm's own stay the chart's (a label twice is invalid YAML). */ -}}
{{- define "vibration-edge.labels" -}}
{{- $ctx := index . 0 -}}
{{- $common := omit ($ctx.Values.commonLabels | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" -}}
helm.sh/chart: {{ include "vibration-edge.chart" $ctx }}
{{ include "vibration-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{- if not (hasKey $common "app.kubernetes.io/part-of") }}
app.kubernetes.io/part-of: vibration-edge
{{- end }}
{{- with $common }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* repository[@digest | :tag]. Call with (list image defaultTag). */}}
{{- define "vibration-edge.image" -}}
{{- $image := index . 0 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) }}
{{- end }}
{{- end }}

{{- define "vibration-edge.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "vibration-edge.componentName" (list . "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces the operator reconciles in namespaced mode, as a list. */}}
{{- define "vibration-edge.watchNamespaces" -}}
{{- $namespaces := .Values.operator.watch.namespaces | default (list .Release.Namespace) }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/* Domain and device name of the Coral resource, e.g. squat.ai and coral. */}}
{{- define "vibration-edge.coralDomain" -}}
{{- index (splitList "/" .Values.coral.resourceName) 0 }}
{{- end }}

{{- define "vibration-edge.coralDevice" -}}
{{- splitList "/" .Values.coral.resourceName | last }}
{{- end }}

{{- define "vibration-edge.brokerName" -}}
{{- include "vibration-edge.componentName" (list . "mosquitto") }}
{{- end }}

{{- define "vibration-edge.brokerAuthSecret" -}}
{{- default (include "vibration-edge.componentName" (list . "mosquitto-auth")) .Values.broker.auth.existingSecret }}
{{- end }}

{{/* The restricted pod-security context of a container; runAsUser given by the caller. */}}
{{- define "vibration-edge.restrictedContainer" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted pod-level security context; runAsUser given by the caller. */}}
{{- define "vibration-edge.restrictedPod" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}
