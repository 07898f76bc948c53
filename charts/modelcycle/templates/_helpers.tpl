{{/* Names, labels and small computed values shared by every template. */}}

{{- define "modelcycle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelcycle.fullname" -}}
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

{{- define "modelcycle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "modelcycle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelcycle
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "modelcycle.operatorSelector" -}}
app.kubernetes.io/name: {{ include "modelcycle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The pods of every ModelDeployment (labels set by operator/modelcycle/builders/serving.py). */}}
{{- define "modelcycle.servingSelector" -}}
app.kubernetes.io/managed-by: modelcycle
app.kubernetes.io/component: serving
modelcycle.io/owner-kind: ModelDeployment
{{- end }}

{{- define "modelcycle.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "modelcycle.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "modelcycle.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Namespaces that get the artifact PVC, the workload ServiceAccount and the NetworkPolicy:
watchNamespaces plus workloadNamespaces, or the release namespace when both are empty. */}}
{{- define "modelcycle.workloadNamespaces" -}}
{{- $ns := concat .Values.watchNamespaces .Values.workloadNamespaces -}}
{{- if not $ns }}{{ $ns = list .Release.Namespace }}{{ end -}}
{{- toJson (uniq $ns) -}}
{{- end }}

{{/* Cross-field checks that values.schema.json cannot express with a clear message. */}}
{{- define "modelcycle.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.peering.enabled) -}}
{{- fail "operator.replicas > 1 needs peering.enabled=true: without peering every instance would reconcile the same objects" -}}
{{- end -}}
{{- if and (eq .Values.artifacts.type "s3") (not .Values.artifacts.s3.uri) -}}
{{- fail "artifacts.type=s3 needs artifacts.s3.uri (s3://bucket/prefix)" -}}
{{- end -}}
{{- if and (eq .Values.artifacts.type "pvc") .Values.artifacts.s3.uri -}}
{{- fail "artifacts.s3.uri is set but artifacts.type is pvc; set artifacts.type=s3 to use it" -}}
{{- end -}}
{{- if eq .Values.operator.livenessPort .Values.operator.metricsPort -}}
{{- fail "operator.livenessPort and operator.metricsPort must differ" -}}
{{- end -}}
{{- end }}
