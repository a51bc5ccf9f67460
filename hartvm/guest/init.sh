#!/bin/busybox sh
# /init of hartvm's default guest (PID 1): mount the usual filesystems, load
# the virtio drivers, then run the guest agent (agent.sh) for the host.
# The initramfs links busybox's applets into /bin; if it could not list them:
[ -e /bin/mount ] || /bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mkdir -p /proc /sys /dev /tmp /run /root /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# Drivers before the virtio-mmio bus, so each device binds as it appears.
for module in $(cat /lib/modules/boot); do insmod "/lib/modules/$module"; done
# A filesystem for disks, only when there are disks.
if [ -e /sys/block/vda ]; then
    for module in $(cat /lib/modules/disk); do insmod "/lib/modules/$module"; done
fi
hostname "$(sed -n 's/.*hartvm.hostname=\([^ ]*\).*/\1/p' /proc/cmdline)"
ip link set lo up 2>/dev/null
# Sourced, so that the shell's messages (exec: not found...) start with "hartvm:".
sh -c '. /lib/hartvm/agent' hartvm
echo "hartvm: the guest agent ended ($?); powering off" >&2
poweroff -f
