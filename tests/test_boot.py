"""Boot tests: OpenSBI from Debian, then Debian's Linux kernel with a busybox initramfs.

The guest files (opensbi, the kernel package that linux-image-riscv64 depends
on, busybox-static; Debian trixie riscv64) are fetched through apt on first
use and cached. The initramfs is built here from busybox and an /init script.
"""

import os
import subprocess
import sys

import pytest

from conftest import PROGRAMS, ROOT, baremetal
from hartvm.guest import debian
from hartvm.guest.initramfs import Initramfs

MAX_INSTRUCTIONS = "6000000000"   # a boot takes about 1.3 billion


@pytest.fixture(scope="session")
def guest():
    return debian.default_guest(progress=False)


def hartvm_boot(*args, stdin=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "hartvm", "boot", *args], input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def make_initramfs(guest, tmp_path, init_script: str) -> str:
    fs = Initramfs()
    fs.file("bin/busybox", guest.busybox.read_bytes(), 0o755)
    fs.symlink("bin/sh", "busybox")
    fs.char_device("dev/console", 5, 1)
    fs.file("init", ("#!/bin/sh\n" + init_script).encode(), 0o755)
    path = tmp_path / "initrd.cpio"
    path.write_bytes(fs.build())
    return str(path)


def test_opensbi_starts_an_s_mode_payload(guest, toolchain):
    payload = baremetal.build([os.path.join(PROGRAMS, "sbi_payload.S")],
                              os.path.join(ROOT, "build", "tests", "sbi_payload.elf"),
                              runtime=False, linker_script=os.path.join(PROGRAMS, "payload.ld"))
    result = hartvm_boot("--kernel", payload, "--max-instructions", "100000000")
    out = result.stdout.decode()
    assert "OpenSBI v1.6" in out
    assert "Domain0 Next Mode           : S-mode" in out
    assert "hello from S-mode through SBI" in out     # the payload ran in S-mode ...
    assert "a1 points at the device tree" in out
    assert result.returncode == 0                     # ... and SBI powered off


INIT = """
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "init: started"
echo "cpus: $(/bin/busybox grep -c ^processor /proc/cpuinfo)"
echo "sum: $((6 * 7))"
/bin/busybox uname -sm
/bin/busybox poweroff -f
"""


def test_linux_boots_to_init_and_powers_off(guest, tmp_path):
    initrd = make_initramfs(guest, tmp_path, INIT)
    result = hartvm_boot("--kernel", str(guest.kernel), "--initrd", initrd,
                         "--append", "console=ttyS0", "--max-instructions", MAX_INSTRUCTIONS)
    out = result.stdout.decode(errors="replace")
    assert "Linux version 6.12" in out
    assert "Run /init as init process" in out
    assert "init: started" in out and "sum: 42" in out and "cpus: 1" in out
    assert "Linux riscv64" in out
    assert "reboot: Power down" in out
    assert result.returncode == 0, result.stderr.decode()


def test_linux_shell_reads_the_serial_console(guest, tmp_path):
    initrd = make_initramfs(guest, tmp_path, "exec /bin/busybox sh\n")
    # busybox's line editor first asks the terminal for the cursor position and
    # reads the first bytes as its answer: lead with lines that may be eaten.
    commands = b":\n:\necho typed-$((40 + 2))\n/bin/busybox poweroff -f\n"
    result = hartvm_boot("--kernel", str(guest.kernel), "--initrd", initrd,
                         "--append", "console=ttyS0 quiet", "--max-instructions",
                         MAX_INSTRUCTIONS, stdin=commands)
    out = result.stdout.decode(errors="replace")
    assert "typed-42" in out
    assert result.returncode == 0


def test_linux_smp_brings_up_every_hart(guest, tmp_path):
    initrd = make_initramfs(guest, tmp_path, INIT)
    result = hartvm_boot("--kernel", str(guest.kernel), "--initrd", initrd, "--smp", "2",
                         "--append", "console=ttyS0", "--max-instructions", MAX_INSTRUCTIONS)
    out = result.stdout.decode(errors="replace")
    assert "smp: Brought up 1 node, 2 CPUs" in out
    assert "cpus: 2" in out
    assert result.returncode == 0


def test_kernel_panic_is_reported(guest, tmp_path):
    """No init in the initramfs: the kernel panics; hartvm stops and says so."""
    fs = Initramfs().char_device("dev/console", 5, 1)
    path = tmp_path / "empty.cpio"
    path.write_bytes(fs.build())
    result = hartvm_boot("--kernel", str(guest.kernel), "--initrd", str(path),
                         "--append", "console=ttyS0 panic=0", "--max-instructions",
                         MAX_INSTRUCTIONS)
    assert result.returncode == 3
    err = result.stderr.decode()
    assert "panicked" in err and "last console lines" in err and "Kernel panic" in err
