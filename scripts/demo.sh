#!/usr/bin/env bash
# The demo of the README: install what qsgw needs, then run `qsgw demo`.
# Two gateways in two network namespaces negotiate X25519 + ML-KEM-768 with
# a PPK and carry real traffic; everything is removed afterwards.
# Arguments go to `qsgw demo` (e.g. --json, --data-plane userspace).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "qsgw demo needs root: it creates network namespaces, a veth pair" \
    "and TUN devices; run it with sudo" >&2
  exit 1
fi
here=$(dirname "$0")
# bootstrap reports on stderr so that `demo.sh --json` prints JSON only
"$here/bootstrap.sh" >&2
. "$here/env.sh"
exec qsgw demo "$@"
