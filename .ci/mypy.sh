#!/usr/bin/env bash
# The package lives in operator/ but is imported as `imagecache`; mypy has no module remapping,
# so give it a one-link tree in which the directory carries the import name.
set -euo pipefail
cd "$(dirname "$0")/.."
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
ln -s "$PWD/operator" "$shim/imagecache"
MYPYPATH="$shim" mypy -p imagecache "$@"
