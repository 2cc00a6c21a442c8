#!/usr/bin/env bash
# Prepares a small VM that boots Debian's stock kernel (which has ESP, unlike
# the hosts we test on) with the host's / shared read-only: the kernel
# package's own files, unpacked, never rebuilt; its uncompressed vmlinux for a
# fast direct boot; and a busybox initramfs holding just the modules needed
# to mount the host. Everything lands in $QSGW_CACHE/vm. Idempotent.
set -euo pipefail
. "$(dirname "$0")/env.sh"

VM=$QSGW_CACHE/vm
# the boot files depend on these: a change to them rebuilds the VM
inputs=$(cat "$QSGW_ROOT/tools/vm/init.sh" "$QSGW_ROOT/tools/vm/prepare.py" | sha256sum | cut -d' ' -f1)
if [ -f "$VM/.complete" ] && [ "$(cat "$VM/.complete")" = "$inputs" ]; then
  echo "kernel-vm: ready ($VM)"
  exit 0
fi

for tool in qemu-system-x86_64 busybox depmod cpio; do
  command -v "$tool" >/dev/null || { echo "kernel-vm: $tool missing: run scripts/bootstrap.sh" >&2; exit 1; }
done

work=$(mktemp -d "$QSGW_CACHE/vm.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# the package behind the linux-image-amd64 metapackage, from the machine's apt sources
apt-get update -qq >/dev/null 2>&1 || true
pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$pkg" ] || { echo "kernel-vm: cannot resolve linux-image-amd64" >&2; exit 1; }
apt-get download -q "$pkg" 2>/dev/null || apt-get download "$pkg"
dpkg-deb -x ./"$pkg"_*.deb kernel
release=$(basename kernel/lib/modules/*)
depmod -b kernel "$release"

"$QSGW_VENV/bin/python" "$QSGW_ROOT/tools/vm/prepare.py" \
  --kernel-root kernel --release "$release" --out "$work/out"

mv kernel "$work/out/kernel"
rm -rf "$VM"
mv "$work/out" "$VM"
echo "$release" > "$VM/release"
echo "$inputs" > "$VM/.complete"
echo "kernel-vm: built $release into $VM"
