"""Where hartvm used to part from QEMU: bare-metal programs that show it does not.

Each program is built by the test set-up from tests/programs, run under
``qemu-system-riscv64 -M virt -bios none`` and under ``hartvm boot --bios
none`` with the same devices; console output and exit status must match.
"""

import pytest

from conftest import build_c, run_hartvm, run_qemu

# QEMU 7.2's virt board makes its virtio-mmio transports legacy (version 1)
# unless told otherwise (hw/virtio/virtio-mmio.c: "force-legacy" defaults
# to true); hartvm's is version 2, as QEMU's with force-legacy=false.
QEMU_MODERN_VIRTIO = ("-global", "virtio-mmio.force-legacy=false")
SECTOR_ONE = b"hartvm fidelity: sector one"


def disk_image(path) -> str:
    """Eight sectors, sector 1 starting with SECTOR_ONE."""
    data = bytearray(4096)
    data[512:512 + len(SECTOR_ONE)] = SECTOR_ONE
    path.write_bytes(bytes(data))
    return str(path)


def test_virtio_driver_without_version_1_uses_its_disk(toolchain, qemu, tmp_path):
    """A driver that writes feature word 0 only (never VERSION_1) gets
    FEATURES_OK, as from QEMU, and reads its disk; so does one that asks for
    a feature the device did not offer (QEMU drops it)."""
    elf = build_c("virtio_word0")
    qemu_disk = disk_image(tmp_path / "qemu.img")
    expected_output, expected_status = run_qemu(
        qemu, elf, *QEMU_MODERN_VIRTIO,
        "-drive", f"file={qemu_disk},if=none,id=d0,format=raw",
        "-device", "virtio-blk-device,drive=d0")
    assert expected_status == 0
    assert b"status with word 0 only: b\n" in expected_output
    assert b"sector 1: " + SECTOR_ONE + b"\n" in expected_output
    result = run_hartvm(elf, "--drive", disk_image(tmp_path / "hartvm.img"))
    assert (result.stdout, result.returncode) == (expected_output, expected_status)
