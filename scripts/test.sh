#!/usr/bin/env bash
# Runs every qsgw check on a fresh Debian machine, as root: installs what is
# missing (system packages, the virtualenv, the peer root filesystem, the
# Kubernetes control-plane binaries; all cached under $QSGW_CACHE), then the
# linters, the type checker, the layer contracts and the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not cluster").
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$QSGW_ROOT"

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root: the tests create network namespaces," \
       "TUN devices and VMs" >&2
  exit 2
fi

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "bootstrap"
scripts/bootstrap.sh
if [ -x scripts/build-peers.sh ]; then
  step "strongSwan and Libreswan peers"
  scripts/build-peers.sh
fi
if [ -x scripts/build-k8s-testenv.sh ]; then
  step "Kubernetes control plane"
  scripts/build-k8s-testenv.sh
fi

step "lint"
ruff check .
ruff format --check .
step "types"
mypy
step "layers"
lint-imports

step "tests"
set +e
python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means no test ran: that is a failure of this command, not a pass
exit $rc
