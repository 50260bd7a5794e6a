#!/usr/bin/env bash
# mypy (strict) on the package; operator/ is the source root that holds imagecache/.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPYPATH="$PWD/operator" mypy -p imagecache "$@"
