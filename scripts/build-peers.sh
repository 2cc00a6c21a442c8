#!/usr/bin/env bash
# Builds the root filesystem that the interop tests run their real IKE peers
# from: Debian sid with strongSwan 6.1 installed by apt and Libreswan 5.2
# unpacked beside it under /opt/libreswan (the two conflict as packages).
#
# Result: "$QSGW_CACHE/peers/" holding rootfs/, versions and a stamp.
# Idempotent: a fast no-op when the stamp matches this recipe. The build
# happens in a temporary directory that is renamed into place at the end,
# so an interrupted build never leaves a half-made peers/ behind.
# The Debian mirror is the one the host's own apt sources name; override it
# with QSGW_DEBIAN_MIRROR.
set -euo pipefail
. "$(dirname "$0")/env.sh"

# Bump when the recipe below changes: the stamp then no longer matches.
RECIPE=4
PEERS="$QSGW_CACHE/peers"
STAMP_LINE="qsgw-peers recipe $RECIPE"
STRONGSWAN_PACKAGES=(strongswan-charon strongswan-swanctl strongswan-pki
  libcharon-extra-plugins libstrongswan-standard-plugins
  libstrongswan-extra-plugins iproute2 iputils-ping iperf3 tcpdump)
LIBRESWAN_PREFIX=/opt/libreswan

log() { echo "build-peers: $*" >&2; }

already_built() {
  [ -f "$PEERS/stamp" ] && [ "$(cat "$PEERS/stamp")" = "$STAMP_LINE" ]
}

# Prints the first Debian archive URI named by the host's apt sources
# (deb822 *.sources first, then one-line sources.list files), skipping the
# security and updates suites, which carry no sid.
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (uris != "" && types ~ /(^| )deb( |$)/ && suites !~ /-security/ \
            && tolower(enabled) != "no")
          { split(uris, u, " "); print u[1]; found = 1; exit }
        uris = ""; types = ""; suites = ""; enabled = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "uris:"   { $1 = ""; uris = $0 }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = $2 }
      END { if (!found) flush() }
    ' "$f" | sed 's/^ *//'
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $0 !~ /-security/ {
           for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//)
             { print $i; exit } }' "$f"
  done
}

find_mirror() {
  local mirror=${QSGW_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(host_mirror | grep -m1 -E '^https?://' || true)
  fi
  if [ -z "$mirror" ]; then
    log "no Debian mirror found in /etc/apt sources; set QSGW_DEBIAN_MIRROR"
    exit 1
  fi
  echo "$mirror"
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends debootstrap >/dev/null
}

# Runs a command inside the root filesystem with /proc mounted. The caller
# is already in a private mount namespace, so nothing reaches the host.
in_root() {
  local root=$1
  shift
  chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"
}

configure_apt() {
  local root=$1
  # sid's Release file looks expired to this machine's clock.
  cat >"$root/etc/apt/apt.conf.d/99qsgw" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  # no daemon may start inside the build
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
}

install_strongswan() {
  local root=$1
  in_root "$root" apt-get update -qq
  in_root "$root" apt-get install -y -qq "${STRONGSWAN_PACKAGES[@]}" \
    libnss3-tools >"$root/../apt.log" 2>&1 || {
    tail -20 "$root/../apt.log" >&2
    exit 1
  }
}

# Libreswan's own dependencies, minus anything that conflicts with the
# strongSwan packages (apt resolves only the libraries we name).
libreswan_dependencies() {
  local root=$1
  in_root "$root" apt-cache depends --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances libreswan |
    awk '$1 == "Depends:" && $2 !~ /^</ { print $2 }' | sort -u
}

install_libreswan() {
  local root=$1
  local deps
  deps=$(libreswan_dependencies "$root")
  # shellcheck disable=SC2086  # one package name per word
  in_root "$root" apt-get install -y -qq $deps >>"$root/../apt.log" 2>&1 || {
    tail -20 "$root/../apt.log" >&2
    exit 1
  }
  # apt-get download complains that /dev/pts is absent; the file check
  # below is what tells success
  in_root "$root" sh -c 'cd /tmp && apt-get download -qq libreswan' \
    >/dev/null 2>&1 || true
  ls "$root"/tmp/libreswan_*.deb >/dev/null
  mkdir -p "$root$LIBRESWAN_PREFIX"
  dpkg-deb -x "$root"/tmp/libreswan_*.deb "$root$LIBRESWAN_PREFIX"
  rm -f "$root"/tmp/libreswan_*.deb
  # pluto runs its helpers (addconn at start-up) from the compiled-in
  # /usr/libexec/ipsec, which strongSwan's packages leave free
  ln -s "$LIBRESWAN_PREFIX/usr/libexec/ipsec" "$root/usr/libexec/ipsec"
}

record_versions() {
  local root=$1 out=$2
  {
    echo "strongswan $(in_root "$root" dpkg-query -W -f='${Version}' \
      strongswan-charon)"
    echo "charon: $(in_root "$root" /usr/lib/ipsec/charon --version 2>&1 |
      head -1)"
    echo "pluto: $(in_root "$root" \
      "$LIBRESWAN_PREFIX/usr/libexec/ipsec/pluto" --version 2>&1 | head -1)"
    echo "libssl $(in_root "$root" dpkg-query -W -f='${Version}' libssl3t64)"
  } >"$out"
}

shrink() {
  local root=$1
  in_root "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
}

# The whole build, run in a private mount namespace (see main).
build() {
  local work=$1 mirror
  mirror=$(find_mirror)
  log "debootstrap sid from $mirror"
  debootstrap --variant=minbase sid "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
  }
  mount -t proc proc "$work/rootfs/proc"
  configure_apt "$work/rootfs"
  log "installing strongSwan"
  install_strongswan "$work/rootfs"
  log "unpacking Libreswan into $LIBRESWAN_PREFIX"
  install_libreswan "$work/rootfs"
  record_versions "$work/rootfs" "$work/versions"
  shrink "$work/rootfs"
  umount "$work/rootfs/proc"
  echo "$STAMP_LINE" >"$work/stamp"
}

main() {
  if already_built; then
    cat "$PEERS/versions"
    return
  fi
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
  mkdir -p "$QSGW_CACHE"
  exec 9>"$QSGW_CACHE/.peers.lock"
  flock 9
  if already_built; then # built by a concurrent run while we waited
    cat "$PEERS/versions"
    return
  fi
  ensure_debootstrap

  local work started
  work=$(mktemp -d "$QSGW_CACHE/peers.build.XXXXXX")
  trap 'rm -rf --one-file-system "$work"' EXIT
  started=$(date +%s)
  unshare -m --propagation private "$0" --build-into "$work"

  if [ -e "$PEERS" ]; then
    mv "$PEERS" "$work/old"
  fi
  mv "$work" "$PEERS"
  trap - EXIT
  rm -rf --one-file-system "$PEERS/old"
  log "built in $(($(date +%s) - started)) s"
  cat "$PEERS/versions"
}

if [ "${1:-}" = "--build-into" ]; then
  build "$2"
else
  main
fi
