{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "dfd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: release-chart, or fullnameOverride. */}}
{{- define "dfd.fullname" -}}
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

{{/* Name of one component's objects: dfd.componentName (dict "root" $ "component" "gateway"). */}}
{{- define "dfd.componentName" -}}
{{- printf "%s-%s" (include "dfd.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dfd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object: dfd.labels (dict "root" $ "component" "gateway"). */}}
{{- define "dfd.labels" -}}
helm.sh/chart: {{ include "dfd.chart" .root }}
{{ include "dfd.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "dfd.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select one component's pods. */}}
{{- define "dfd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dfd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion: dfd.image (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "dfd.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The S3 credentials Secret: required, never a placeholder. */}}
{{- define "dfd.s3.secretName" -}}
{{- required "s3.existingSecret is required: create a Secret with the S3 access and secret keys and set s3.existingSecret to its name" .Values.s3.existingSecret -}}
{{- end -}}

{{- define "dfd.triton.grpcAddress" -}}
{{- printf "%s:8001" (include "dfd.componentName" (dict "root" . "component" "triton")) -}}
{{- end -}}

{{- define "dfd.publicBaseUrl" -}}
{{- if .Values.config.publicBaseUrl -}}
{{- .Values.config.publicBaseUrl -}}
{{- else if .Values.gateway.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty .Values.gateway.ingress.tlsSecret))) .Values.gateway.ingress.hostname -}}
{{- else -}}
{{- printf "http://%s:%v" (include "dfd.componentName" (dict "root" . "component" "gateway")) .Values.gateway.service.port -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the gateway and the workers: secrets and the Redis URL. */}}
{{- define "dfd.env" -}}
- name: DFD_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "dfd.s3.secretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: DFD_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "dfd.s3.secretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
{{- if .Values.config.existingApiKeysSecret }}
- name: DFD_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.config.existingApiKeysSecret }}
      key: {{ .Values.config.apiKeysSecretKey }}
{{- end }}
{{- if .Values.config.existingAdminKeysSecret }}
- name: DFD_ADMIN_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.config.existingAdminKeysSecret }}
      key: {{ .Values.config.adminKeysSecretKey }}
{{- end }}
{{ include "dfd.redisEnv" . }}
{{- end -}}

{{/* DFD_REDIS_URL (and the REDIS_PASSWORD it expands): all the exporter needs of dfd.env. */}}
{{- define "dfd.redisEnv" -}}
{{- if .Values.redis.enabled }}
{{- $host := include "dfd.componentName" (dict "root" . "component" "redis") }}
{{- if .Values.redis.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.passwordKey }}
# $(REDIS_PASSWORD) is expanded by the kubelet from the variable above.
- name: DFD_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" $host | quote }}
{{- else }}
- name: DFD_REDIS_URL
  value: {{ printf "redis://%s:6379/0" $host | quote }}
{{- end }}
{{- else if .Values.externalRedis.existingSecret }}
- name: DFD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.urlKey }}
{{- else }}
- name: DFD_REDIS_URL
  value: {{ required "redis.enabled=false needs externalRedis.url or externalRedis.existingSecret" .Values.externalRedis.url | quote }}
{{- end }}
{{- end -}}

{{/* Whether the cluster serves the Prometheus Operator's CRDs (helm template: --api-versions monitoring.coreos.com/v1). */}}
{{- define "dfd.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/* Volumes and mounts of the dfd pods: shared data and a writable /tmp (the root filesystem is read-only). */}}
{{- define "dfd.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ default (include "dfd.componentName" (dict "root" . "component" "data")) .Values.sharedData.existingClaim }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "dfd.volumeMounts" -}}
- name: data
  mountPath: /var/lib/dfd
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Whether an autoscaler owns the worker Deployment's replica count (KEDA or the HPA, never both). */}}
{{- define "dfd.worker.autoscaled" -}}
{{- $scaling := .Values.worker.autoscaling }}
{{- if and $scaling.keda.enabled $scaling.hpa.enabled -}}
{{- fail "worker.autoscaling: enable keda or hpa, not both (KEDA makes its own HPA)" -}}
{{- end -}}
{{- if gt (int $scaling.minReplicas) (int $scaling.maxReplicas) -}}
{{- fail "worker.autoscaling.minReplicas is above worker.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if or $scaling.keda.enabled $scaling.hpa.enabled -}}true{{- end -}}
{{- end -}}
