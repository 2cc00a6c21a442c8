{{- define "qsgw-operator.name" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qsgw-operator.labels" -}}
app.kubernetes.io/name: qsgw-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "qsgw-operator.selector" -}}
app.kubernetes.io/name: qsgw-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
