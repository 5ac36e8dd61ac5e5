{{/*
The chart's name, cut to the 63 characters Kubernetes allows in a label.
*/}}
{{- define "mandate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's object name: <release>-mandate, or the release name alone when
it already says mandate.
*/}}
{{- define "mandate.fullname" -}}
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

{{- define "mandate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mandate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mandate.labels" -}}
{{ include "mandate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: mandate
{{- if .Release.Service }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- if .Chart.Version }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mandate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mandate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mandate.policiesConfigMap" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "mandate.fullname" .)) }}
{{- end }}

{{- define "mandate.entitiesConfigMap" -}}
{{- .Values.store.file.existingConfigMap | default (printf "%s-entities" (include "mandate.fullname" .)) }}
{{- end }}

{{/*
API versions by what the cluster serves: the GA one when the cluster is new
enough and serves it, else the beta one Kubernetes 1.20 has. helm install
and upgrade ask the cluster; helm template uses its built-in version and API
list, or --kube-version and --api-versions.
*/}}
{{- define "mandate.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end }}
{{- end }}

{{- define "mandate.hpaApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end }}
{{- end }}

{{/*
The Secret holding search.token_key: the one named in values, or the chart's.
*/}}
{{- define "mandate.searchTokenKeySecret" -}}
{{- .Values.search.tokenKeySecret.name | default (printf "%s-search-token-key" (include "mandate.fullname" .)) }}
{{- end }}

{{- define "mandate.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "mandate.fullname" .)) }}
{{- end }}

{{- define "mandate.clientCASecret" -}}
{{- .Values.tls.clientCA.secretName | default (printf "%s-client-ca" (include "mandate.fullname" .)) }}
{{- end }}

{{/*
mandate.json: the user's `config` with the keys the chart manages laid over
it — listeners, mounted paths, store, TLS and the gateway route table.
*/}}
{{- define "mandate.config" -}}
{{- $v := .Values }}
{{- $managed := dict }}
{{- $_ := set $managed "server" (dict
  "listen" (printf "%s:%d" $v.listenAddress (int $v.containerPort))
  "admin_listen" (printf "0.0.0.0:%d" (int $v.adminPort))
  "shutdown_grace_period" (printf "%ds" (sub (int $v.terminationGracePeriodSeconds) 5 | max 1))) }}
{{- $_ := set $managed "policy" (dict "dir" "/etc/mandate/policies" "schema" "/etc/mandate/policies") }}
{{- if eq $v.store.kind "file" }}
{{- $_ := set $managed "store" (dict "kind" "file" "entities" "/etc/mandate/entities/entities.json") }}
{{- else }}
{{- $store := dict "kind" "http" "upstream" $v.store.http.url }}
{{- if $v.store.http.caSecret }}
{{- $_ := set $store "upstream_ca" "/etc/mandate/store-ca/ca.crt" }}
{{- end }}
{{- $_ := set $managed "store" $store }}
{{- end }}
{{- if $v.tls.enabled }}
{{- $tls := dict "cert" "/etc/mandate/tls/tls.crt" "key" "/etc/mandate/tls/tls.key" }}
{{- if $v.tls.clientCA.enabled }}
{{- $_ := set $tls "client_ca" "/etc/mandate/client-ca/ca.crt" }}
{{- $_ := set $tls "allowed_clients" $v.tls.allowedClients }}
{{- end }}
{{- $_ := set $managed "tls" $tls }}
{{- end }}
{{- $gateway := dict
  "principal_header" $v.gateway.principalHeader
  "principal_type" $v.gateway.principalType
  "unmatched_status" $v.gateway.unmatchedStatus
  "trusted_headers" $v.gateway.trustedHeaders
  "routes" $v.gateway.routes }}
{{- with $v.gateway.original }}
{{- $_ := set $gateway "original" . }}
{{- end }}
{{- if $v.gateway.grpc.enabled }}
{{- $_ := set $gateway "grpc_listen" (printf "0.0.0.0:%d" (int $v.gateway.grpc.port)) }}
{{- end }}
{{- $_ := set $managed "gateway" $gateway }}
{{- with $v.bus }}
{{- if .url }}
{{- $bus := dict "url" .url "subject" .subject }}
{{- if .credentialsSecret.name }}
{{- $_ := set $bus "credentials_file" (printf "/etc/mandate/nats-creds/%s" .credentialsSecret.key) }}
{{- end }}
{{- if .caSecret }}
{{- $_ := set $bus "tls_ca" "/etc/mandate/nats-ca/ca.crt" }}
{{- end }}
{{- $_ := set $managed "bus" $bus }}
{{- $cache := deepCopy (default (dict) $v.config.cache) }}
{{- $_ := set $cache "ttl_without_bus" .ttlWithoutBus }}
{{- $_ := set $managed "cache" $cache }}
{{- end }}
{{- end }}
{{- mergeOverwrite (deepCopy $v.config) $managed | toPrettyJson }}
{{- end }}

{{/*
The Mandate container. Its argument is a context with Values, Release and
Chart (the chart's own, or one the sidecar template builds).
*/}}
{{- define "mandate.container" -}}
{{- $v := .Values -}}
- name: mandate
  image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["serve", "--config", "/etc/mandate/config/mandate.json"]
  env:
    - name: MANDATE_SEARCH_TOKEN_KEY
      valueFrom:
        secretKeyRef:
          name: {{ include "mandate.searchTokenKeySecret" . }}
          key: {{ $v.search.tokenKeySecret.key }}
    {{- if and (eq $v.store.kind "http") $v.store.http.tokenSecret.name }}
    - name: MANDATE_STORE_UPSTREAM_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $v.store.http.tokenSecret.name }}
          key: {{ $v.store.http.tokenSecret.key }}
    {{- end }}
    {{- if $v.admin.tokenSecret.name }}
    - name: MANDATE_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $v.admin.tokenSecret.name }}
          key: {{ $v.admin.tokenSecret.key }}
    {{- end }}
    {{- with $v.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* Port names are unique across a pod's containers, so they carry
  the product's name beside a sidecar's neighbours. */}}
  ports:
    - name: mandate
      containerPort: {{ $v.containerPort }}
      protocol: TCP
    - name: mandate-admin
      containerPort: {{ $v.adminPort }}
      protocol: TCP
    {{- if $v.gateway.grpc.enabled }}
    - name: mandate-grpc
      containerPort: {{ $v.gateway.grpc.port }}
      protocol: TCP
    {{- end }}
  {{- /* Mutual TLS asks every client for a certificate, which the kubelet
  cannot give: the probes then only check the admin port accepts. */}}
  {{- $scheme := ternary "HTTPS" "HTTP" $v.tls.enabled }}
  {{- $mutual := and $v.tls.enabled $v.tls.clientCA.enabled }}
  livenessProbe:
    {{- if $mutual }}
    tcpSocket:
      port: mandate-admin
    {{- else }}
    httpGet:
      path: /healthz
      port: mandate-admin
      scheme: {{ $scheme }}
    {{- end }}
    {{- toYaml $v.livenessProbe | nindent 4 }}
  readinessProbe:
    {{- if $mutual }}
    tcpSocket:
      port: mandate-admin
    {{- else }}
    httpGet:
      path: /readyz
      port: mandate-admin
      scheme: {{ $scheme }}
    {{- end }}
    {{- toYaml $v.readinessProbe | nindent 4 }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mandate-config
      mountPath: /etc/mandate/config
      readOnly: true
    - name: mandate-policies
      mountPath: /etc/mandate/policies
      readOnly: true
    {{- if eq $v.store.kind "file" }}
    - name: mandate-entities
      mountPath: /etc/mandate/entities
      readOnly: true
    {{- else if $v.store.http.caSecret }}
    - name: mandate-store-ca
      mountPath: /etc/mandate/store-ca
      readOnly: true
    {{- end }}
    {{- if and $v.bus.url $v.bus.credentialsSecret.name }}
    - name: mandate-nats-creds
      mountPath: /etc/mandate/nats-creds
      readOnly: true
    {{- end }}
    {{- if and $v.bus.url $v.bus.caSecret }}
    - name: mandate-nats-ca
      mountPath: /etc/mandate/nats-ca
      readOnly: true
    {{- end }}
    {{- if $v.tls.enabled }}
    - name: mandate-tls
      mountPath: /etc/mandate/tls
      readOnly: true
    {{- if $v.tls.clientCA.enabled }}
    - name: mandate-client-ca
      mountPath: /etc/mandate/client-ca
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}

{{/*
The volumes the Mandate container mounts (same context as mandate.container).
*/}}
{{- define "mandate.volumes" -}}
{{- $v := .Values -}}
- name: mandate-config
  configMap:
    name: {{ include "mandate.fullname" . }}-config
- name: mandate-policies
  configMap:
    name: {{ include "mandate.policiesConfigMap" . }}
{{- if eq $v.store.kind "file" }}
- name: mandate-entities
  configMap:
    name: {{ include "mandate.entitiesConfigMap" . }}
{{- else if $v.store.http.caSecret }}
- name: mandate-store-ca
  secret:
    secretName: {{ $v.store.http.caSecret }}
{{- end }}
{{- if and $v.bus.url $v.bus.credentialsSecret.name }}
- name: mandate-nats-creds
  secret:
    secretName: {{ $v.bus.credentialsSecret.name }}
{{- end }}
{{- if and $v.bus.url $v.bus.caSecret }}
- name: mandate-nats-ca
  secret:
    secretName: {{ $v.bus.caSecret }}
{{- end }}
{{- if $v.tls.enabled }}
- name: mandate-tls
  secret:
    secretName: {{ include "mandate.tlsSecret" . }}
{{- if $v.tls.clientCA.enabled }}
- name: mandate-client-ca
  secret:
    secretName: {{ include "mandate.clientCASecret" . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The context the sidecar templates work in: the parent chart's `mandate`
values (this chart as a dependency), its release, and this chart's name.
*/}}
{{- define "mandate.sidecarContext" -}}
{{- $values := required "mandate.sidecar: add the mandate chart as a dependency, so .Values.mandate exists" .Values.mandate }}
{{- toYaml (dict "Values" $values "Release" (dict "Name" .Release.Name "Service" .Release.Service) "Chart" (dict "Name" "mandate")) }}
{{- end }}

{{/*
Mandate as a container in another chart's pod. Call it from the parent's pod
spec, under `containers:`, with the parent's root context:
    containers:
      - name: app
        ...
      {{- include "mandate.sidecar" . | nindent 6 }}
and add its volumes under `volumes:` with `include "mandate.sidecarVolumes" .`.
Set `enableServiceLinks: false` in that pod spec: Kubernetes otherwise
injects a MANDATE_… variable for every Service whose name starts with
mandate (older Mandate releases refuse unknown MANDATE_… variables).
*/}}
{{- define "mandate.sidecar" -}}
{{- include "mandate.container" (include "mandate.sidecarContext" . | fromYaml) }}
{{- end }}

{{/*
The volumes of the sidecar (see mandate.sidecar).
*/}}
{{- define "mandate.sidecarVolumes" -}}
{{- include "mandate.volumes" (include "mandate.sidecarContext" . | fromYaml) }}
{{- end }}

{{/*
A checksum of mandate.json for a pod annotation: the server reads its config
once at start, so a config change must roll the pods (policies, entities and
certificates reload in place and need no such annotation).
*/}}
{{- define "mandate.configChecksum" -}}
{{- include "mandate.config" . | sha256sum }}
{{- end }}

{{/*
The same checksum for a parent chart's pod running the sidecar.
*/}}
{{- define "mandate.sidecarConfigChecksum" -}}
{{- include "mandate.configChecksum" (include "mandate.sidecarContext" . | fromYaml) }}
{{- end }}
