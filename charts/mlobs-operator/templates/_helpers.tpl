{{/*
Names and labels shared by every template. The labels are the ones config/ (kustomize) writes
literally: no Helm-only labels, so both installs render the same objects (tests/install.rs).
*/}}

{{- define "mlobs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release name when it already contains the chart name, else "<release>-<chart>". */}}
{{- define "mlobs-operator.fullname" -}}
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

{{- define "mlobs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlobs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Not app.kubernetes.io/managed-by: the operator selects its own children by
managed-by=mlobs, and the operator's objects are not its children.
*/}}
{{- define "mlobs-operator.labels" -}}
{{ include "mlobs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mlobs
{{- end -}}

{{- define "mlobs-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* A second replica without leader election would reconcile twice: replicas > 1 forces it on. */}}
{{- define "mlobs-operator.leaderElect" -}}
{{- if or (gt (int .Values.replicas) 1) .Values.leaderElection.enabled -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{/* The Leases the replicas compete for: one, or one per shard (`mlobs run --shard I/M`). */}}
{{- define "mlobs-operator.leaseNames" -}}
{{- $shards := int .Values.shards -}}
{{- $names := list "mlobs-operator-leader" -}}
{{- if gt $shards 1 -}}
{{- $names = list -}}
{{- range $i := until $shards -}}
{{- $names = append $names (printf "mlobs-operator-leader-%d-of-%d" $i $shards) -}}
{{- end -}}
{{- end -}}
{{- toYaml $names -}}
{{- end -}}
