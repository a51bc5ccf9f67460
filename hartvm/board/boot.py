"""Boot placement on the virt board, as QEMU's ``hw/riscv/boot.c`` does it.

Where the firmware, the kernel, the initrd and the device tree go in RAM,
and what the boot ROM holds. Each rule names the QEMU function it follows,
so that software that boots on ``qemu-system-riscv64 -M virt`` finds its
images where it expects them:

- firmware (OpenSBI) at the start of RAM;
- the kernel on the next 2 MiB boundary after the firmware
  (``riscv_calc_kernel_start_addr``: RV64 aligns to 2 MiB, RV32 to 4 MiB);
- the initrd ``min(RAM / 2, 128 MiB)`` after the kernel's entry
  (``riscv_load_initrd``: far enough that the decompressed kernel does not
  clobber it, near enough to stay in low memory), and never over the
  kernel's image (its declared size, see loader/image.py);
- the device tree at the highest 2 MiB-aligned address below
  ``min(end of RAM, 3 GiB)`` that holds it (``riscv_compute_fdt_addr``),
  for a bare-metal program too (``bare_metal_fdt``);
- the boot ROM at 0x1000: the reset vector followed by the
  ``fw_dynamic_info`` block (``riscv_setup_rom_reset_vec``).
"""

import struct

from ..errors import HartvmError
from ..hostfile import read_bounded
from ..loader.image import Blob, LoadedImage, load_file

KERNEL_ALIGN = 2 << 20          # riscv_calc_kernel_start_addr, RV64
INITRD_OFFSET_MAX = 128 << 20   # riscv_load_initrd: at most 128 MiB after the entry
FDT_ALIGN = 2 << 20             # riscv_compute_fdt_addr
FDT_LIMIT = 3 << 30             # riscv_compute_fdt_addr: below 3 GiB (reachable from RV32)
QEMU_FDT_SIZE = 1 << 20         # the buffer QEMU builds its tree in (see bare_metal_fdt)
PAGE = 4096

# OpenSBI's fw_dynamic handoff (include/sbi/fw_dynamic.h; QEMU's
# include/hw/riscv/boot_opensbi.h): magic "OSBI", version 2, next address
# and mode, options, boot hart (0: any).
FW_DYNAMIC_MAGIC = 0x4942534F
FW_DYNAMIC_VERSION = 2
NEXT_MODE_S = 1


def reset_vector(start: int, fdt: int, next_addr: int, next_mode: int = NEXT_MODE_S) -> bytes:
    """The boot ROM's contents: code, then the start and fdt addresses, then
    fw_dynamic_info (the instructions of QEMU's riscv_setup_rom_reset_vec)."""
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


def kernel_start(firmware_end: int) -> int:
    return -(-firmware_end // KERNEL_ALIGN) * KERNEL_ALIGN


def initrd_start(kernel: LoadedImage, ram_size: int) -> int:
    start = kernel.entry + min(ram_size // 2, INITRD_OFFSET_MAX)
    return max(start, -(-kernel.end // PAGE) * PAGE)


def fdt_address(ram, dtb_size: int) -> int:
    top = min(ram.base + ram.size, FDT_LIMIT)
    return (top - dtb_size) // FDT_ALIGN * FDT_ALIGN


def bare_metal_fdt(ram, image: LoadedImage, path: str) -> int:
    """Where a bare-metal program's device tree goes (``--bios none``).

    QEMU's virt board places the tree whatever the firmware, even none
    (``virt_machine_done`` calls ``riscv_load_fdt``), and the program gets
    its address in a1. ``riscv_load_fdt`` places and reserves the whole
    1 MiB buffer the tree was built in (``create_device_tree``'s
    FDT_MAX_SIZE), measured before it is packed; a segment over that range
    makes QEMU refuse the ELF ("Some ROM regions are overlapping",
    hw/core/loader.c), which is what a program too large for its RAM meets:
    so is it here.
    """
    address = fdt_address(ram, QEMU_FDT_SIZE)
    end = min(address + QEMU_FDT_SIZE, ram.base + ram.size)
    for segment in image.segments:
        if segment.paddr < end and address < segment.paddr + segment.memsize:
            raise HartvmError(f"{path}: segment at {segment.paddr:#x}-"
                              f"{segment.paddr + segment.memsize:#x} overlaps the device tree, "
                              f"which goes at {address:#x}-{end:#x} as on QEMU's virt board "
                              f"(use more --memory)")
    return address


class LinuxBoot:
    """Firmware, kernel and initrd loaded into ``ram``; the device tree is placed
    by ``place_fdt`` once it is built (it needs the initrd's range)."""

    def __init__(self, ram, kernel: str, firmware: str, initrd: str | None = None):
        self.ram = ram
        self.firmware = load_file(firmware, ram, ram.base, "firmware")
        self.kernel = load_file(kernel, ram, kernel_start(self.firmware.end), "kernel")
        if any(blob.paddr < self.firmware.end for blob in self.kernel.blobs):
            raise HartvmError(f"kernel {kernel} is linked at {self.kernel.blobs[0].paddr:#x}, "
                              f"inside the firmware (up to {self.firmware.end:#x}); for a "
                              f"bare-metal program use --bios none")
        self.blobs = list(self.firmware.blobs) + list(self.kernel.blobs)
        self.initrd: tuple[int, int] | None = None
        if initrd is not None:
            self._load_initrd(initrd)

    def _load_initrd(self, path: str) -> None:
        data = read_bounded(path, "initrd", self.ram.size)
        start = initrd_start(self.kernel, self.ram.size)
        if not self.ram.contains(start, len(data)):
            raise HartvmError(f"{path}: {len(data)} bytes do not fit in RAM after the "
                              f"kernel (use more --memory)")
        self.blobs.append(Blob(start, data))
        self.initrd = (start, start + len(data))

    def place_fdt(self, dtb: bytes) -> int:
        """Put the device tree in place; returns its address."""
        address = fdt_address(self.ram, len(dtb))
        if address < max(b.paddr + len(b.data) for b in self.blobs):
            raise HartvmError("the kernel, initrd and device tree do not fit in RAM "
                              "(use more --memory)")
        self.blobs.append(Blob(address, dtb))
        return address
