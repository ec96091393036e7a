{{/* Names and labels. */}}
{{- define "rolegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rolegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "rolegate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "rolegate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rolegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rolegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rolegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rolegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret and key of the master secret. */}}
{{- define "rolegate.masterSecretName" -}}
{{- if .Values.masterSecret.value }}{{ include "rolegate.fullname" . }}-master-secret{{ else }}{{ required "masterSecret.existingSecret or masterSecret.value is required" .Values.masterSecret.existingSecret }}{{ end }}
{{- end }}

{{/* The Secret of the PostgreSQL URL. */}}
{{- define "rolegate.storeSecretName" -}}
{{- if .Values.store.postgres.url }}{{ include "rolegate.fullname" . }}-store{{ else }}{{ required "store.postgres.existingSecret or store.postgres.url is required with store.kind postgres" .Values.store.postgres.existingSecret }}{{ end }}
{{- end }}

{{/* The ConfigMaps mounted over the image's policies and schema ("" = none). */}}
{{- define "rolegate.policiesConfigMap" -}}
{{- if .Values.policies.existingConfigMap }}{{ .Values.policies.existingConfigMap }}{{ else if .Values.policies.files }}{{ include "rolegate.fullname" . }}-policies{{ end }}
{{- end }}
{{- define "rolegate.schemaConfigMap" -}}
{{- if .Values.schema.existingConfigMap }}{{ .Values.schema.existingConfigMap }}{{ else if .Values.schema.files }}{{ include "rolegate.fullname" . }}-schema{{ end }}
{{- end }}

{{/* Settings that do not go together. */}}
{{- define "rolegate.validate" -}}
{{- if not (has .Values.store.kind (list "postgres" "sqlite")) }}
{{- fail (printf "store.kind must be postgres or sqlite, not %q" .Values.store.kind) }}
{{- end }}
{{- if and (eq .Values.store.kind "sqlite") (gt (int .Values.replicaCount) 1) }}
{{- fail "store.kind sqlite keeps users in one pod's file: set replicaCount to 1, or use store.kind postgres" }}
{{- end }}
{{- end }}

{{/* The rolegate container; `native` adds what a native sidecar needs. */}}
{{- define "rolegate.container" -}}
{{- $native := .Values.rolegate.nativeSidecar -}}
- name: rolegate
  image: "{{ .Values.rolegate.image.repository }}:{{ .Values.rolegate.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.rolegate.image.pullPolicy }}
  {{- if $native }}
  restartPolicy: Always
  {{- end }}
  command: ["/usr/local/bin/rolegate"]
  args: ["serve"]
  ports:
    - name: http
      containerPort: 8080
      protocol: TCP
    - name: ops
      containerPort: 9090
      protocol: TCP
  env:
    - name: ROLEGATE_UPSTREAM
      value: {{ .Values.rolegate.upstream | default (printf "http://127.0.0.1:%d" (int .Values.app.port)) | quote }}
    - name: ROLEGATE_LISTEN
      value: "0.0.0.0:8080"
    # Reachable by the kubelet's probes; not part of the Service.
    - name: ROLEGATE_OPS_LISTEN
      value: "0.0.0.0:9090"
    - name: ROLEGATE_POLICIES_DIR
      value: /etc/rolegate/policies
    - name: ROLEGATE_SCHEMA_DIR
      value: /etc/rolegate/schema
    - name: ROLEGATE_DRAIN_SECONDS
      value: {{ .Values.rolegate.drainSeconds | quote }}
    - name: ROLEGATE_MASTER_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ include "rolegate.masterSecretName" . }}
          key: {{ .Values.masterSecret.key }}
    {{- if eq .Values.store.kind "postgres" }}
    - name: ROLEGATE_STORE
      valueFrom:
        secretKeyRef:
          name: {{ include "rolegate.storeSecretName" . }}
          key: {{ .Values.store.postgres.key }}
    {{- end }}
    {{- with .Values.rolegate.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    # Whole-directory mounts, never subPath, so that rolegate sees the
    # kubelet's updates of the ConfigMaps and reloads them.
    {{- if include "rolegate.policiesConfigMap" . }}
    - name: policies
      mountPath: /etc/rolegate/policies
      readOnly: true
    {{- end }}
    {{- if include "rolegate.schemaConfigMap" . }}
    - name: schema
      mountPath: /etc/rolegate/schema
      readOnly: true
    {{- end }}
    {{- if eq .Values.store.kind "sqlite" }}
    - name: data
      mountPath: /var/lib/rolegate
    {{- end }}
    - name: tmp
      mountPath: /tmp
  {{- if not $native }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.rolegate.preStopSeconds }}
  {{- end }}
  {{- if $native }}
  startupProbe:
    {{- toYaml .Values.rolegate.startupProbe | nindent 4 }}
  {{- end }}
  livenessProbe:
    {{- toYaml .Values.rolegate.livenessProbe | nindent 4 }}
  readinessProbe:
    {{- toYaml .Values.rolegate.readinessProbe | nindent 4 }}
  resources:
    {{- toYaml .Values.rolegate.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities:
      drop: ["ALL"]
{{- end }}
