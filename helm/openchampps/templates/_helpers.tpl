{{/* Chart name, overridable. */}}
{{- define "openchampps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects; DNS label length. */}}
{{- define "openchampps.fullname" -}}
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

{{- define "openchampps.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openchampps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openchampps.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "openchampps.labels" -}}
helm.sh/chart: {{ include "openchampps.chart" . }}
{{ include "openchampps.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node
{{- end }}

{{- define "openchampps.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openchampps.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding DB_CONN, REDIS_URL and the optional MATCH_TICKET_KEYS,
DB_MIGRATION_URL and GAME_SERVER_TOKEN: the user's, or the one this chart renders. */}}
{{- define "openchampps.secretName" -}}
{{- default (include "openchampps.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "openchampps.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Refuses a grace period that would SIGKILL a node in the middle of its drain:
preStop sleep + SHUTDOWN_DRAIN_SECS + 5 s for closing handshakes and the final flush.
*/}}
{{- define "openchampps.checkGracePeriod" -}}
{{- $needed := add .Values.lifecycle.preStopSleepSeconds .Values.config.shutdownDrainSecs 5 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least lifecycle.preStopSleepSeconds + config.shutdownDrainSecs + 5 = %v" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}

{{/*
TRUSTED_PROXIES, comma-separated ("" for []). It has no default on purpose: behind an
ingress, trusting no proxy makes every player share the ingress's address for the
per-address limits, so the chart refuses to render until the value is chosen.
fail, not required: helm lint only warns about a missing required value.
*/}}
{{- define "openchampps.trustedProxies" -}}
{{- $proxies := .Values.config.trustedProxies }}
{{- if kindIs "invalid" $proxies }}
{{- fail "config.trustedProxies must be set: the CIDRs of your ingress/load balancer (e.g. [10.0.0.0/8]), or [] if players connect to the pods directly (then every player behind a proxy shares one address for rate limits)" }}
{{- end }}
{{- join "," $proxies }}
{{- end }}

{{/*
AGONES_SELECTOR_LABELS from config.agones.selectorLabels: key=value, comma-separated,
in key order ("" for {}).
*/}}
{{- define "openchampps.agonesSelectorLabels" -}}
{{- $pairs := list }}
{{- range $k, $v := .selectorLabels }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Refuses what the node would refuse at start-up or silently ignore:
allocator=command without allocatorCommand (the node exits with
"ALLOCATOR=command needs ALLOCATOR_COMMAND"), allocator=agones without
agones.allocatorUrl (via allocator-service), or with an https one and no
agones.tlsSecret (the node exits: mTLS needs the files), agones.via=kubernetes with a
tlsSecret (the node exits: client certificates are not used there), and matchTicketKeys / dbMigrationUrl / gameServerToken
values next to existingSecret (they would not reach the node: the chart then renders
no Secret).
*/}}
{{- define "openchampps.checkMatchmaking" -}}
{{- if and (eq .Values.config.allocator "command") (not (trim .Values.config.allocatorCommand)) }}
{{- fail "config.allocator is command but config.allocatorCommand is empty: set the program run per match, or use allocator static with config.gameServers" }}
{{- end }}
{{- if eq .Values.config.allocator "agones" }}
{{- $agones := .Values.config.agones }}
{{- if eq $agones.via "kubernetes" }}
{{- if $agones.tlsSecret }}
{{- fail "config.agones.via is kubernetes but config.agones.tlsSecret is set: the Kubernetes API path authenticates with the service account token, not a client certificate; unset tlsSecret" }}
{{- end }}
{{- else }}
{{- if not (trim $agones.allocatorUrl) }}
{{- fail "config.allocator is agones but config.agones.allocatorUrl is empty: set the Agones allocator service URL (e.g. https://agones-allocator.agones-system:443)" }}
{{- end }}
{{- if and (hasPrefix "https://" (trim $agones.allocatorUrl)) (not $agones.tlsSecret) }}
{{- fail "config.agones.allocatorUrl is https but config.agones.tlsSecret is empty: name the Secret with the mTLS client certificate, key and CA" }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.existingSecret }}
{{- if .Values.matchTicketKeys }}
{{- fail (printf "matchTicketKeys is set, but existingSecret is too: put the keys in the Secret %s under %s instead" .Values.existingSecret (.Values.existingSecretKeys.matchTicketKeys | default "MATCH_TICKET_KEYS")) }}
{{- end }}
{{- if .Values.dbMigrationUrl }}
{{- fail (printf "dbMigrationUrl is set, but existingSecret is too: put the URL in the Secret %s under %s instead" .Values.existingSecret (.Values.existingSecretKeys.dbMigrationUrl | default "DB_MIGRATION_URL")) }}
{{- end }}
{{- if .Values.gameServerToken }}
{{- fail (printf "gameServerToken is set, but existingSecret is too: put the token in the Secret %s under %s instead" .Values.existingSecret (.Values.existingSecretKeys.gameServerToken | default "GAME_SERVER_TOKEN")) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
storeCa: one source for the CA file, the Secret or the ConfigMap.
*/}}
{{- define "openchampps.checkStoreCa" -}}
{{- if and .Values.storeCa.secretName .Values.storeCa.configMapName }}
{{- fail "storeCa: set secretName or configMapName, not both" }}
{{- end }}
{{- end }}

{{/*
The first admin comes from a name and a Secret together.
*/}}
{{- define "openchampps.checkAdmin" -}}
{{- if ne (empty .Values.admin.bootstrap.name) (empty .Values.admin.bootstrap.secretName) }}
{{- fail "admin.bootstrap: set name and secretName together (the first admin's name and the Secret with its password)" }}
{{- end }}
{{- if and .Values.admin.port (or (eq (int .Values.admin.port) (int .Values.ports.http)) (eq (int .Values.admin.port) (int .Values.ports.metrics))) }}
{{- fail "admin.port must differ from ports.http and ports.metrics (0: serve the admin API on ports.metrics)" }}
{{- end }}
{{- end }}
