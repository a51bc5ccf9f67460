"""The ``virt`` board: QEMU's RISC-V virt memory map, its devices and the boot ROM.

One table, ``MEMORY_MAP``, says where everything is; devices are attached
from it, and later the device tree is generated from it, so that software
built for QEMU's ``-M virt`` runs unmodified.

Boot follows QEMU: every hart starts at the reset vector in the boot ROM,
which loads a0 = mhartid, a1 = device-tree address, a2 = address of the
``fw_dynamic_info`` block (OpenSBI's fw_dynamic handoff, which follows the
code in the ROM) and jumps to the start address (the firmware, or with
``--bios none`` the kernel's entry point).
"""

import struct
from dataclasses import dataclass

from ..bus import Bus
from ..devices.aclint import ACLINT
from ..devices.rom import ROM
from ..devices.syscon import Syscon
from ..devices.uart16550 import UART16550
from ..memory import RAM


@dataclass(frozen=True)
class Region:
    base: int
    size: int
    irq: int | None = None


VIRTIO_SLOTS = 8
MEMORY_MAP: dict[str, Region] = {
    "rom": Region(0x0000_1000, 0xF000),
    "syscon": Region(0x0010_0000, 0x1000),
    "rtc": Region(0x0010_1000, 0x1000, irq=11),
    "clint": Region(0x0200_0000, 0x10000),
    "plic": Region(0x0C00_0000, 0x600000),
    "uart0": Region(0x1000_0000, 0x100, irq=10),
    **{f"virtio{i}": Region(0x1000_1000 + i * 0x1000, 0x1000, irq=1 + i)
       for i in range(VIRTIO_SLOTS)},
    "dram": Region(0x8000_0000, 0),  # size: the machine's memory size
}

FW_DYNAMIC_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_VERSION = 2
NEXT_MODE_S = 1


def reset_vector(start: int, fdt: int, next_addr: int, next_mode: int = NEXT_MODE_S) -> bytes:
    """The boot ROM contents: code, then start/fdt addresses, then fw_dynamic_info."""
    code = [
        0x00000297,  # auipc t0, 0          t0 = address of this code
        0x02828613,  # addi  a2, t0, 40     a2 = &fw_dynamic_info
        0xF1402573,  # csrr  a0, mhartid
        0x0202B583,  # ld    a1, 32(t0)     a1 = device tree
        0x0182B283,  # ld    t0, 24(t0)     t0 = start address
        0x00028067,  # jr    t0
    ]
    fw_dynamic_info = struct.pack("<6Q", FW_DYNAMIC_MAGIC, FW_DYNAMIC_VERSION, next_addr,
                                  next_mode, 0, 0)
    return struct.pack("<6I", *code) + struct.pack("<2Q", start, fdt) + fw_dynamic_info


class VirtBoard:
    """RAM, the bus and the devices of the board, wired from ``MEMORY_MAP``."""

    def __init__(self, memory_size: int, hart_states, output, on_exit, on_reset):
        dram = MEMORY_MAP["dram"]
        self.ram = RAM(dram.base, memory_size)
        rom = MEMORY_MAP["rom"]
        self.rom = ROM(rom.size)
        self.uart = UART16550(output)
        self.clint = ACLINT(hart_states)
        self.syscon = Syscon(on_exit, on_reset)
        self.bus = Bus()
        for name, device in (("rom", self.rom), ("syscon", self.syscon),
                             ("clint", self.clint), ("uart0", self.uart)):
            region = MEMORY_MAP[name]
            self.bus.attach(region.base, region.size, device)

    def set_boot(self, start: int, fdt: int = 0) -> None:
        """Point the reset vector at ``start`` (firmware or bare-metal entry)."""
        content = reset_vector(start, fdt, start)
        self.rom.data[:] = 0
        self.rom.data[:len(content)] = list(content)
