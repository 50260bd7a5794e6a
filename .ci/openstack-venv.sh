#!/usr/bin/env bash
# Builds the venv holding a real Keystone and Glance (from PyPI) for tests/openstack/.
# Kept outside the repository (default ~/.cache/imagecache/openstack-venv, override with
# IMAGECACHE_OPENSTACK_VENV), built once (a few minutes: uWSGI compiles from source), then a
# stamp file makes every later run a no-op. Prints the venv path last, on its own line.
set -euo pipefail

venv="${IMAGECACHE_OPENSTACK_VENV:-$HOME/.cache/imagecache/openstack-venv}"
here="$(cd "$(dirname "$0")" && pwd)"
constraints="$here/openstack-constraints.txt"
# The stamp names what was installed: a change of the pins (this script or the constraints)
# rebuilds the venv.
stamp_value="$(cat "$0" "$constraints" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.imagecache-stamp"
start=$(date +%s)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ]; then
  echo "openstack venv: up to date in $(( $(date +%s) - start )) s" >&2
  echo "$venv"
  exit 0
fi

# uWSGI builds from source: it needs a C compiler and the Python headers.
python3="${IMAGECACHE_OPENSTACK_PYTHON:-python3}"
include_dir="$("$python3" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if ! command -v gcc >/dev/null || [ ! -f "$include_dir/Python.h" ]; then
  echo "openstack venv: installing gcc and python3-dev" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >&2
fi

echo "openstack venv: building $venv (a few minutes)" >&2
rm -rf "$venv"
"$python3" -m venv "$venv"
# pip's output without this machine's notes about absent local index folders.
quiet_pip() {
  "$venv/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
}
quiet_pip install --quiet --upgrade pip setuptools wheel
quiet_pip install --quiet -c "$constraints" \
  glance==33.0.0 keystone==30.0.0 uwsgi python-openstackclient
echo "$stamp_value" >"$stamp"
echo "openstack venv: built in $(( $(date +%s) - start )) s" >&2
echo "$venv"
