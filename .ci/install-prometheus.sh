#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package, for tests/monitoring.
#
# Idempotent: nothing happens when both are on PATH already. The package's maintainer scripts
# would start its service (a Prometheus on :9090 that nobody wants here, and that fails the
# install on a machine without an init system): while installing, a policy-rc.d that refuses
# every service start is put in place unless one exists, and removed afterwards.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  echo "prometheus and promtool already installed: $(promtool --version 2>&1 | head -1)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus: not root; run 'apt-get install prometheus' as root (tests/monitoring skip without it)" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# installed by .ci/install-prometheus.sh while it runs\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "installed: $(promtool --version 2>&1 | head -1)"
