{{/*
The agent pod template, shared by agent-daemonset.yaml and agent-statefulset.yaml.
*/}}
{{- define "imagecache.agent.podTemplate" -}}
metadata:
  labels:
    {{- include "imagecache.componentLabels" (dict "ctx" . "component" "agent") | nindent 4 }}
    {{- with .Values.agent.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Tells the operator which port this pod's agent listens on.
    imagecache.dev/port: {{ .Values.agent.port | quote }}
    {{- with .Values.agent.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "imagecache.agent.fullname" . }}
  {{- if eq .Values.agent.auth "kubernetes" }}
  # auth kubernetes: the agent's only API call is a TokenReview (agent-rbac.yaml), with the
  # projected service-account token the kubelet rotates.
  automountServiceAccountToken: true
  {{- else }}
  # The agent never talks to the Kubernetes API.
  automountServiceAccountToken: false
  {{- end }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.agent.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.agent.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- include "imagecache.podSecurityContext" . | nindent 4 }}
  containers:
    - name: agent
      image: {{ include "imagecache.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: [imagecache-agent]
      env:
        # The agent's default self URL (GET /v2/cache/nodes/{id}) is built from POD_IP.
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- if eq .Values.agent.auth "kubernetes" }}
        # auth kubernetes: only tokens minted for imagecache.dev/agent/<this pod's UID> pass.
        - name: IMAGECACHE_POD_UID
          valueFrom:
            fieldRef:
              fieldPath: metadata.uid
        {{- end }}
        {{- $upstreamToken := "" }}
        {{- if .Values.agent.upstream.tokenSecret }}
        {{- $upstreamToken = "/var/run/secrets/imagecache/upstream-token/token" }}
        {{- end }}
        {{- $listenHost := .Values.agent.listenHost }}
        {{- if contains ":" $listenHost }}
        {{- $listenHost = printf "[%s]" $listenHost }}
        {{- end }}
        {{- $chartSettings := dict
              "listen" (printf "%s:%d" $listenHost (int .Values.agent.port))
              "cacheDir" "/var/cache/imagecache"
              "upstream" .Values.agent.upstream.url
              "upstreamTokenFile" $upstreamToken
              "tokenFile" "/var/run/secrets/imagecache/agent-token/token"
              "maxSize" .Values.agent.cache.maxSize
              "auth" .Values.agent.auth
              "osCloud" .Values.agent.openstack.cloud
              "selfUrl" .Values.agent.selfUrl }}
        {{- if eq .Values.agent.auth "kubernetes" }}
        {{- $_ := set $chartSettings "operatorServiceAccount" (printf "system:serviceaccount:%s:%s" .Release.Namespace (include "imagecache.operator.serviceAccountName" .)) }}
        {{- end }}
        {{- $settings := merge $chartSettings (deepCopy .Values.agent.settings) }}
        {{- include "imagecache.settingsEnv" (dict "prefix" "IMAGECACHE_" "settings" $settings) | trim | nindent 8 }}
        {{- if .Values.agent.openstack.cloudsSecret }}
        # Read by openstacksdk's clouds.yaml loader (the standard variable, no IMAGECACHE_ prefix).
        - name: OS_CLIENT_CONFIG_FILE
          value: /etc/openstack/clouds.yaml
        {{- end }}
        {{- with .Values.agent.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.agent.port }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 3
      resources:
        {{- toYaml .Values.agent.resources | nindent 8 }}
      securityContext:
        {{- include "imagecache.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: cache
          mountPath: /var/cache/imagecache
        - name: agent-token
          mountPath: /var/run/secrets/imagecache/agent-token
          readOnly: true
        {{- if .Values.agent.upstream.tokenSecret }}
        - name: upstream-token
          mountPath: /var/run/secrets/imagecache/upstream-token
          readOnly: true
        {{- end }}
        {{- if .Values.agent.openstack.cloudsSecret }}
        - name: openstack-clouds
          mountPath: /etc/openstack
          readOnly: true
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- with .Values.agent.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- if eq .Values.agent.cache.type "emptyDir" }}
    - name: cache
      emptyDir:
        sizeLimit: {{ .Values.agent.cache.size }}
    {{- else if eq .Values.agent.cache.type "hostPath" }}
    # Directory, not DirectoryOrCreate: a directory Kubernetes creates is owned by root and
    # fsGroup never applies to hostPath, so the non-root agent could not write it. The node
    # directory is prepared beforehand (docs/install.md); a missing one keeps the pod Pending
    # with a clear event instead of crash-looping.
    - name: cache
      hostPath:
        path: {{ .Values.agent.cache.hostPath }}
        type: Directory
    {{- end }}
    {{- /* type pvc: the StatefulSet's volumeClaimTemplates provide "cache". */}}
    - name: agent-token
      secret:
        secretName: {{ include "imagecache.agentToken.secretName" . }}
        defaultMode: 0440
        items:
          - key: {{ .Values.agentToken.secretKey }}
            path: token
    {{- if .Values.agent.upstream.tokenSecret }}
    - name: upstream-token
      secret:
        secretName: {{ .Values.agent.upstream.tokenSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.agent.upstream.tokenSecretKey }}
            path: token
    {{- end }}
    {{- if .Values.agent.openstack.cloudsSecret }}
    # A directory mount (not subPath) so rotated credentials reach the running agent.
    - name: openstack-clouds
      secret:
        secretName: {{ .Values.agent.openstack.cloudsSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.agent.openstack.cloudsSecretKey }}
            path: clouds.yaml
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.agent.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.agent.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.agent.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.agent.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
