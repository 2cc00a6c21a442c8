#!/usr/bin/env bash
# Installs what qsgw needs on a fresh Debian machine: system packages and a
# virtualenv with the project and its development tools. Idempotent.
set -euo pipefail
. "$(dirname "$0")/env.sh"

APT_PACKAGES=(iproute2 nftables iperf3 iputils-ping tcpdump debootstrap
  openssl ca-certificates python3-venv busybox-static qemu-system-x86
  cpio xz-utils zstd kmod)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

mkdir -p "$QSGW_CACHE"
if [ ! -x "$QSGW_VENV/bin/python" ]; then
  python3 -m venv "$QSGW_VENV"
fi
stamp="$QSGW_VENV/.qsgw-installed"
if [ ! -f "$stamp" ] || [ "$QSGW_ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$QSGW_VENV/bin/pip" install -q --upgrade pip
  "$QSGW_VENV/bin/pip" install -q -e "$QSGW_ROOT[dev]"
  touch "$stamp"
else
  # the editable install points at one checkout: repoint it if this is another
  "$QSGW_VENV/bin/python" - "$QSGW_ROOT" <<'PY' || "$QSGW_VENV/bin/pip" install -q --no-deps -e "$QSGW_ROOT[dev]"
import sys, pathlib, qsgw
sys.exit(0 if pathlib.Path(qsgw.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve()) else 1)
PY
fi
echo "bootstrap: ready ($QSGW_VENV)"
