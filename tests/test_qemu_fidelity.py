"""Where hartvm used to part from QEMU: bare-metal programs that show it does not.

Each program is built by the test set-up from tests/programs, run under
``qemu-system-riscv64 -M virt -bios none`` and under ``hartvm boot --bios
none`` with the same devices; console output and exit status must match.
"""

import os
import subprocess

import pytest

from conftest import PROGRAMS, ROOT, baremetal, build_c, run_hartvm, run_qemu

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


def test_elf_with_segments_outside_ram_runs(toolchain, qemu):
    """QEMU loads the parts of an ELF's segments that lie in RAM or in the
    boot ROM and drops the rest: a first segment holding only the headers,
    below RAM, a segment running past the end of RAM, and one in the boot
    ROM. hartvm used to refuse the file."""
    elf = baremetal.build([os.path.join(PROGRAMS, "outside_ram.c")],
                          os.path.join(ROOT, "build", "tests", "outside_ram.elf"),
                          linker_script=os.path.join(PROGRAMS, "outside_ram.ld"))
    headers = subprocess.run([baremetal.CROSS + "readelf", "-lW", elf], capture_output=True,
                             text=True, check=True).stdout
    loads = [int(line.split()[3], 16) for line in headers.splitlines()
             if line.split()[:1] == ["LOAD"]]              # the physical addresses
    assert loads[0] == 0x7FFFF000 and 0x8000 in loads      # the first one below RAM
    expected_output, expected_status = run_qemu(qemu, elf, "-m", "128M")
    assert expected_status == 0
    assert b"last words of RAM: 7a110001 7a110002 7a110003 7a110004\n" in expected_output
    result = run_hartvm(elf, "--memory", "128M")
    assert (result.stdout, result.returncode) == (expected_output, expected_status)


@pytest.mark.parametrize("memory", ["128M", "5M"])
def test_bare_metal_program_gets_the_device_tree(toolchain, qemu, memory):
    """a1 holds the device tree's address, at the top of RAM, as QEMU places
    it even with -bios none; hartvm used to pass 0."""
    elf = build_c("devicetree")
    expected_output, expected_status = run_qemu(qemu, elf, "-m", memory)
    assert expected_status == 0 and b"magic d00dfeed" in expected_output
    result = run_hartvm(elf, "--memory", memory)
    assert (result.stdout, result.returncode) == (expected_output, expected_status)


def test_rtc_alarm_interrupts_as_in_qemu(toolchain, qemu):
    """The Goldfish RTC's alarm raises PLIC source 11 when its time comes,
    waking a hart in WFI; an alarm already due fires at once, its interrupt
    latched until CLEAR_INTERRUPT; CLEAR_ALARM disarms. hartvm used to store
    the alarm and never fire it (the program then waited forever)."""
    elf = build_c("rtc_alarm")
    expected_output, expected_status = run_qemu(qemu, elf)
    assert expected_status == 0
    assert b"woken by the PLIC: 1, line pending 1, alarm status 0, time past the alarm: yes\n" \
        in expected_output
    result = run_hartvm(elf)
    assert (result.stdout, result.returncode) == (expected_output, expected_status)


def test_bare_metal_start_is_the_start_of_ram(toolchain, qemu):
    """With -bios none QEMU's reset vector jumps to the start of RAM, with the
    ELF's entry point in fw_dynamic_info (a2); hartvm used to jump to the entry."""
    elf = baremetal.build([os.path.join(PROGRAMS, "entry_after_ram_base.S")],
                          os.path.join(ROOT, "build", "tests", "entry_after_ram_base.elf"),
                          runtime=False, extra=("-Wl,-e,entry",))
    header = subprocess.run([baremetal.CROSS + "readelf", "-h", elf], capture_output=True,
                            text=True, check=True).stdout
    entry = int(header.split("Entry point address:")[1].split()[0], 16)
    assert entry > 0x80000000                               # not the start of RAM
    expected_output, expected_status = run_qemu(qemu, elf)
    assert expected_status == 0
    result = run_hartvm(elf)
    assert (result.stdout, result.returncode) == (expected_output, expected_status)
