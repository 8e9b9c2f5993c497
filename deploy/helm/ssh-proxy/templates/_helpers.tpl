{{/*
Object names are fixed, as in the k8shell chart (ssh-proxy, ssh-internal, ssh-proxy-config, int-ssh-proxy),
so workspaces' ProxyCommand targets and existing host-key Secrets keep working; one release per namespace.
*/}}

{{/* Labels on every object. */}}
{{- define "ssh-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: ssh-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ssh-proxy
{{- end }}

{{/* Pod selector: the k8shell chart's, since a Deployment's selector cannot change on upgrade. */}}
{{- define "ssh-proxy.selectorLabels" -}}
k8shell.io/app: ssh-proxy
{{- end }}

{{/* Image reference. */}}
{{- define "ssh-proxy.image" -}}
{{- $img := .Values.sshProxy.image -}}
{{- $tag := $img.tag | default (printf "%s-%s" .Chart.AppVersion $img.runtime) -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end }}

{{/* imagePullSecrets, as the k8shell chart: an existing Secret, or the one made from username/password. */}}
{{- define "ssh-proxy.imagePullSecrets" -}}
{{- if .Values.imageRegistry.existingSecret }}
imagePullSecrets:
  - name: {{ .Values.imageRegistry.existingSecret }}
{{- else if and .Values.imageRegistry.host .Values.imageRegistry.username .Values.imageRegistry.password }}
imagePullSecrets:
  - name: {{ printf "%s-regcred" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Pod grace period: above drainTimeout, so SIGKILL never cuts a drain short. */}}
{{- define "ssh-proxy.gracePeriod" -}}
{{- $drain := int .Values.sshProxy.drainTimeout -}}
{{- if kindIs "invalid" .Values.sshProxy.terminationGracePeriodSeconds -}}
{{- add $drain 15 -}}
{{- else -}}
{{- $grace := int .Values.sshProxy.terminationGracePeriodSeconds -}}
{{- if le $grace $drain -}}
{{- fail (printf "sshProxy.terminationGracePeriodSeconds (%d) must be greater than sshProxy.drainTimeout (%d)" $grace $drain) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end }}

{{/*
One gRPC client block of config.yaml as a dict: {address, tokenFilePath} plus, with cert-manager, the
cluster CA and the TLS server name <service>.<namespace>.svc (or the address's host when it is qualified).
Call with (list $ "identity" "identity:9020").
*/}}
{{- define "ssh-proxy.client" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $address := index . 2 -}}
{{- $client := dict "address" $address "tokenFilePath" (printf "/var/run/secrets/k8shell.io/%s" $name) -}}
{{- if $root.Values.certManager.enabled -}}
{{- $host := first (splitList ":" $address) -}}
{{- $_ := set $client "caCertPath" "/etc/k8shell/ca/ca.crt" -}}
{{- $_ := set $client "serverName" (ternary (printf "%s.%s.svc" $host $root.Release.Namespace) $host (not (contains "." $host))) -}}
{{- end -}}
{{- toYaml $client -}}
{{- end }}
