#!/bin/busybox sh
# /init of hartvm's default guest (PID 1): mount the usual filesystems, load
# the virtio drivers, then run the guest agent (agent.sh) for the host.
# Every process costs the guest millions of instructions, so shell builtins
# do what they can.
# The initramfs links busybox's applets into /bin; if it could not list them:
[ -e /bin/mount ] || /bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# Commands run in a cgroup of their own (see agent.sh): killed as one, all of
# them, whatever they fork; a fork bomb meets a pids limit, not the agent's,
# and with the cpu controller the whole cgroup weighs as much as one of the
# agent's processes, so that the agent still runs to kill it.
cgroups=/sys/fs/cgroup
mount -t cgroup2 cgroup2 $cgroups &&
    mkdir $cgroups/command0 $cgroups/command1 $cgroups/background &&
    echo "+pids +cpu" > $cgroups/cgroup.subtree_control &&
    for group in command0 command1 background; do echo 1024 > $cgroups/$group/pids.max; done
# Drivers before the virtio-mmio bus, so each device binds as it appears.
read -r modules < /lib/modules/boot
for module in $modules; do insmod "/lib/modules/$module"; done
# A filesystem for disks, only when there are disks.
if [ -e /sys/block/vda ]; then
    read -r modules < /lib/modules/disk
    for module in $modules; do insmod "/lib/modules/$module"; done
fi
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in hartvm.hostname=*) echo "${word#*=}" > /proc/sys/kernel/hostname;; esac
done
# Sourced, so that the shell's messages (exec: not found...) start with "hartvm:".
sh -c '. /lib/hartvm/agent' hartvm
echo "hartvm: the guest agent ended ($?); powering off" >&2
poweroff -f
