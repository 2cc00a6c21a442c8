#!/bin/sh
# PID 1 of the test VM. The host's / arrives read-only over virtio-9p; the
# new root is a tmpfs whose top-level folders are bind mounts of the host's
# (an overlay on 9p loses the mounts made on it), with fresh proc, sys, dev
# and run. The host's /tmp stays visible (a checkout may live there); the
# guest writes its temporary files to /run/tmp (TMPDIR). The read-write
# control folder is /qsgw-ctl: the VM runs its
# command.sh, leaves the exit status in /qsgw-ctl/status and powers off.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/modules/$m" 2>/dev/null; done < /modules/order

opts=trans=virtio,version=9p2000.L,msize=524288
if ! mount -t 9p -o "$opts,cache=loose,ro" hostroot /host; then
  echo "vm-init: cannot mount the host root"
  reboot -f
fi
mount -t tmpfs -o size=1g tmpfs /newroot
for entry in /host/* /host/.[!.]*; do
  name=${entry#/host/}
  case "$name" in proc|sys|dev|run|lost+found|'.[!.]*') continue ;; esac
  if [ -L "$entry" ]; then
    ln -s "$(readlink "$entry")" "/newroot/$name"
  elif [ -d "$entry" ]; then
    mkdir -p "/newroot/$name" && mount --bind "$entry" "/newroot/$name"
  fi
done
for d in proc sys dev run tmp qsgw-ctl; do mkdir -p "/newroot/$d"; done
mount -t 9p -o "$opts" ctl /newroot/qsgw-ctl
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t tmpfs tmpfs /newroot/run
mkdir -p /newroot/dev/pts /newroot/run/netns /newroot/run/lock /newroot/run/tmp
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/var/tmp 2>/dev/null
chroot /newroot /bin/sh -c '
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  export HOME=/run/tmp TMPDIR=/run/tmp
  hostname qsgw-vm
  ip link set lo up
  sh /qsgw-ctl/command.sh > /qsgw-ctl/output 2>&1
  echo $? > /qsgw-ctl/status
  sync
'
reboot -f
