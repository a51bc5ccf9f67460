"""Virtio block, entropy and console devices, driven by Debian's Linux drivers.

The initramfs carries the kernel's virtio_mmio, virtio_blk and virtio-rng
modules (decompressed from the package's .ko.xz) and an /init that loads
them, reads and writes the disk, reads the entropy device and talks over
the console port (/dev/hvc0) in both directions.
"""

import lzma

import pytest

from hartvm import HostIO, Machine
from hartvm.devices.virtio.blk import Block
from hartvm.devices.virtio.console import VirtioConsole
from hartvm.devices.virtio.rng import Rng
from hartvm.guest import debian
from hartvm.guest.initramfs import Initramfs

MODULES = ["kernel/drivers/virtio/virtio_mmio.ko.xz", "kernel/drivers/block/virtio_blk.ko.xz",
           "kernel/drivers/char/hw_random/virtio-rng.ko.xz"]
INIT = """#!/bin/sh
b=/bin/busybox
$b mkdir -p /proc /sys /dev
$b mount -t proc proc /proc
$b mount -t sysfs sys /sys
$b mount -t devtmpfs dev /dev
for m in /modules/*.ko; do $b insmod $m; done
echo "disk sectors: $($b cat /sys/block/vda/size)"
echo "disk starts: $($b dd if=/dev/vda bs=16 count=1 2>/dev/null)"
echo "written by the guest" | $b dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null
$b sync
echo "rng: $($b cat /sys/class/misc/hw_random/rng_current)"
echo "random bytes: $($b dd if=/dev/hwrng bs=8 count=1 2>/dev/null | $b od -An -tx1)"
exec 3<>/dev/hvc0
$b stty -F /dev/hvc0 raw -echo
echo "to the host through hvc0" >&3
echo "from the host: $($b head -c 17 <&3)"
$b poweroff -f
"""


@pytest.fixture(scope="module")
def initrd(tmp_path_factory):
    guest = debian.default_guest(progress=False)
    fs = Initramfs().file("bin/busybox", guest.busybox.read_bytes(), 0o755)
    fs.symlink("bin/sh", "busybox").char_device("dev/console", 5, 1)
    fs.file("init", INIT.encode(), 0o755)
    for module in MODULES:
        name = module.rsplit("/", 1)[1].removesuffix(".xz")
        fs.file(f"modules/{name}", lzma.decompress((guest.modules_dir / module).read_bytes()))
    path = tmp_path_factory.mktemp("virtio") / "initrd.cpio"
    path.write_bytes(fs.build())
    return guest, str(path)


def test_linux_uses_virtio_disk_entropy_and_console(initrd, tmp_path):
    guest, initrd_path = initrd
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"HARTVM-DISK-0001" + bytes(1 << 20))
    out = []
    machine = Machine(memory_size=256 << 20, io=HostIO(output=out.append))
    machine.board.attach_virtio("disk0", Block(str(disk)))
    machine.board.attach_virtio("rng", Rng())
    from_guest = []
    console = VirtioConsole()
    hvc = console.add_port(from_guest.append, console=True)
    machine.board.attach_virtio("console", console)
    machine.boot(str(guest.kernel), str(guest.firmware), initrd_path, "console=ttyS0 quiet")
    # Run until the guest has written to hvc0 (so its end is open), then answer.
    result = machine.run(until=lambda: bool(from_guest), max_instructions=6_000_000_000)
    assert result.stop.name == "STOPPED"
    hvc.send(b"hello, guest 0123")
    result = machine.run(max_instructions=2_000_000_000)
    text = b"".join(out).decode(errors="replace")
    assert result.stop.name == "EXITED" and result.status == 0, text[-2000:]
    assert f"disk sectors: {(16 + (1 << 20)) // 512}" in text
    assert "disk starts: HARTVM-DISK-0001" in text
    assert disk.read_bytes()[512:512 + 20] == b"written by the guest"   # on the host file
    assert "rng: virtio_rng" in text
    assert "random bytes:" in text and "random bytes: \n" not in text
    assert b"".join(from_guest) == b"to the host through hvc0\n"
    assert "from the host: hello, guest 0123" in text
