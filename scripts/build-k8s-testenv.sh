#!/usr/bin/env bash
# Builds the binaries of the test control plane from Go modules, through the
# ordinary `go` client and whatever module proxy the machine's Go is set up
# with: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok (plus a config holding its Stage objects) and helm.
#
# Output: "$QSGW_CACHE/k8s/$K8S_VERSION/bin" (printed as the last line).
# Go's module and build caches live in "$QSGW_CACHE/go" so that everything
# this script downloads or compiles sits in one place outside the repository.
# Idempotent: a no-op when every binary exists with the wanted version.
set -Eeuo pipefail
trap 'echo "build-k8s-testenv: failed (line $LINENO): $BASH_COMMAND" >&2' ERR
. "$(dirname "$0")/env.sh"

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.17}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v4.3.2}

TESTENV_DIR="$QSGW_CACHE/k8s/$K8S_VERSION"
BIN="$TESTENV_DIR/bin"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="$QSGW_CACHE/go/mod" GOCACHE="$QSGW_CACHE/go/build"
export GOFLAGS="-buildvcs=false"
GO_BUILD=(go build -p 2 -trimpath)

# built NAME VERSION: true when $BIN/NAME exists and was built at VERSION
built() {
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]
}

# stamp NAME VERSION: records that $BIN/NAME was built at VERSION
stamp() {
  printf '%s\n' "$2" >"$BIN/.$1.version"
}

# new_module DIR NAME: an empty wrapper module in DIR
new_module() {
  rm -rf "$1"
  mkdir -p "$1"
  (cd "$1" && go mod init "qsgw.local/testenv/$2" 2>/dev/null)
}

# module_dir MODULE@VERSION: where the module's source lies in GOMODCACHE
module_dir() {
  go mod download -json "$1" | python3 -c \
    'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

# kube_ldflags: version stamps as upstream's hack/lib/version.sh sets them
kube_ldflags() {
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local flags="-s -w" pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1"
    flags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    flags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

# k8s.io/kubernetes replaces its staging modules with local directories and
# requires them at v0.0.0; a wrapper module replaces each with its published
# v0.X.Y, the list derived from upstream's own go.mod.
build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local n missing=0
  for n in "${names[@]}"; do built "$n" "$K8S_VERSION" || missing=1; done
  [ "$missing" = 1 ] || return 0

  local src="$TESTENV_DIR/src/kubernetes" staging="v0.${K8S_VERSION#v1.}"
  new_module "$src" kubernetes
  local upstream
  upstream=$(cd "$src" && module_dir "k8s.io/kubernetes@$K8S_VERSION")
  local modules
  modules=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' \
    "$upstream/go.mod")
  local godebug
  godebug=$(sed -n 's#^godebug[[:space:]]\+##p' "$upstream/go.mod")

  cd "$src"
  local m
  for m in $modules; do go mod edit -replace="$m=$m@$staging"; done
  [ -z "$godebug" ] || go mod edit -godebug="$godebug"
  local pkgs=()
  for n in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  local tools=()
  for n in "${pkgs[@]}"; do tools+=("$n@$K8S_VERSION"); done
  go get -tool "${tools[@]}"
  "${GO_BUILD[@]}" -ldflags "$(kube_ldflags)" -o "$BIN/" "${pkgs[@]}"
  for n in "${names[@]}"; do stamp "$n" "$K8S_VERSION"; done
}

# go.etcd.io/etcd/server/v3 has replace directives too, so it also needs a
# wrapper module (its own: etcd pins other grpc and otel versions).
build_etcd() {
  built etcd "$ETCD_VERSION" && return 0
  local src="$TESTENV_DIR/src/etcd"
  new_module "$src" etcd
  cd "$src"
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  "${GO_BUILD[@]}" -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  stamp etcd "$ETCD_VERSION"
}

# kwok has no replace directives; its version string comes from build info.
build_kwok() {
  built kwok "$KWOK_VERSION" && return 0
  GOBIN="$BIN" go install -p 2 -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"
}

# kwok v0.8.0 has no built-in stages: the fixture passes this file as
# --config. Fast node/pod life cycles, lease heartbeats, and the chaos stage
# that turns a node labelled node-not-ready.stage.kwok.x-k8s.io=true NotReady.
write_kwok_stages() {
  local out="$TESTENV_DIR/kwok-stages.yaml"
  [ -s "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$KWOK_VERSION" ] \
    && return 0
  local dir
  dir=$(cd "$TESTENV_DIR" && module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
  local f
  for f in node/fast/node-initialize.yaml \
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    node/chaos/node-not-ready.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml \
    pod/fast/pod-delete.yaml; do
    printf -- '---\n'
    grep -v '^---[[:space:]]*$' "$dir/kustomize/stage/$f"
  done >"$out.tmp"
  mv "$out.tmp" "$out"
  printf '%s\n' "$KWOK_VERSION" >"$out.version"
}

build_helm() {
  built helm "$HELM_VERSION" && return 0
  GOBIN="$BIN" go install -p 2 -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
}

mkdir -p "$BIN"
build_etcd
build_kwok
write_kwok_stages
build_helm
build_kubernetes
echo "$BIN"
