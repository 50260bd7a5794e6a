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
  # The agent never talks to the Kubernetes API.
  automountServiceAccountToken: false
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
        - name: IMAGECACHE_LISTEN
          value: {{ printf "0.0.0.0:%d" (int .Values.agent.port) | quote }}
        - name: IMAGECACHE_CACHE_DIR
          value: /var/cache/imagecache
        - name: IMAGECACHE_UPSTREAM
          value: {{ .Values.agent.upstream.url | quote }}
        {{- if .Values.agent.upstream.tokenSecret }}
        - name: IMAGECACHE_UPSTREAM_TOKEN_FILE
          value: /var/run/secrets/imagecache/upstream-token/token
        {{- end }}
        - name: IMAGECACHE_TOKEN_FILE
          value: /var/run/secrets/imagecache/agent-token/token
        - name: IMAGECACHE_MAX_SIZE
          value: {{ .Values.agent.cache.maxSize | quote }}
        - name: IMAGECACHE_WORKERS
          value: {{ .Values.agent.settings.workers | quote }}
        - name: IMAGECACHE_STALL_TIMEOUT
          value: {{ .Values.agent.settings.stallTimeout | quote }}
        - name: IMAGECACHE_RETRIES
          value: {{ .Values.agent.settings.retries | quote }}
        - name: IMAGECACHE_CACHE_ON_READ
          value: {{ .Values.agent.settings.cacheOnRead | quote }}
        - name: IMAGECACHE_LOG_FORMAT
          value: {{ .Values.agent.settings.logFormat | quote }}
        - name: IMAGECACHE_LOG_LEVEL
          value: {{ .Values.agent.settings.logLevel | quote }}
        - name: IMAGECACHE_DRAIN_TIMEOUT
          value: {{ .Values.agent.settings.drainTimeout | quote }}
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
    - name: cache
      hostPath:
        path: {{ .Values.agent.cache.hostPath }}
        type: DirectoryOrCreate
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
