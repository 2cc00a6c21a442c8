# Shared settings for qsgw's scripts: sourced, never run.
# Heavy downloads and builds live in a cache outside the repository so that
# reruns on the same machine are fast; override with QSGW_CACHE.
QSGW_CACHE=${QSGW_CACHE:-/var/cache/qsgw}
QSGW_VENV=${QSGW_VENV:-$QSGW_CACHE/venv}
QSGW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export QSGW_CACHE QSGW_VENV QSGW_ROOT
export PATH="$QSGW_VENV/bin:$PATH"
