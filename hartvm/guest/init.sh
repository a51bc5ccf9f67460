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
# The loopback interface, as every Linux system has it up.
ip link set lo up
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
# Shared folders, only with a virtio-9p device (id 9): the host mounts them
# per command (vmm/volumes.py). The network card's driver, only with a
# virtio-net device (id 1): the agent brings it up (vmm/network_card.py).
for id in /sys/bus/virtio/devices/*/device; do
    read -r id < "$id"
    case "$id" in
    0x0009) read -r modules < /lib/modules/9p;;
    0x0001) read -r modules < /lib/modules/net;;
    *) continue;;
    esac
    for module in $modules; do insmod "/lib/modules/$module"; done
done
read -r cmdline < /proc/cmdline
root= grow=
for word in $cmdline; do
    case "$word" in
    hartvm.hostname=*) echo "${word#*=}" > /proc/sys/kernel/hostname;;
    hartvm.root=*) root=${word#*=};;
    hartvm.grow=1) grow=1;;
    esac
done
# The agent, sourced, so that the shell's messages (exec: not found...) start
# with "hartvm:"; then the machine powers off.
start_agent='HARTVM_DIR=$0 $0/busybox sh -c ". $0/agent" hartvm; echo "hartvm: the guest agent ended ($?); powering off" >&2; $0/busybox poweroff -f'
if [ -n "$root" ]; then
    # An image (vmm/images.py): its ext4 filesystem becomes the root, and
    # busybox and the agent come along in /run (a tmpfs, as in Debian), so
    # that the agent runs as it does here, in busybox's shell, and the
    # commands it starts are the image's programs. No systemd: PID 1 stays
    # busybox's shell, which waits for the agent.
    mkdir /newroot
    if ! mount -t ext4 -o rw "$root" /newroot; then
        echo "hartvm: cannot mount the image's root filesystem $root" >&2
        poweroff -f
    fi
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
    mkdir /newroot/run/hartvm
    cp /bin/busybox /lib/hartvm/agent /lib/hartvm/udhcpc /newroot/run/hartvm/
    for mountpoint in /dev /proc /sys; do mount --move $mountpoint /newroot$mountpoint; done
    # A root disk larger than the image (--disk-size): the filesystem grows
    # to fill it, online, with the image's own resize2fs.
    [ -n "$grow" ] && chroot /newroot resize2fs "$root" >/dev/null 2>&1
    exec switch_root /newroot /run/hartvm/busybox sh -c "$start_agent" /run/hartvm
fi
sh -c "$start_agent" /lib/hartvm
