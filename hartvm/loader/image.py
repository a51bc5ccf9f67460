"""Loading boot images: ELF executables or raw binaries (firmware, Linux Image).

``load_file`` copies a file into guest RAM and returns what the machine
needs to boot it: the entry point, the end of the memory it occupies, and
the blobs it wrote (so that a reset can write them again). An ELF is loaded
by its segments' physical addresses (what lies outside RAM is not written:
see elf.py; its segments are returned for the boot ROM's part); anything
else is a raw image loaded at the given address. A RISC-V Linux ``Image``
(its header, Documentation/arch/riscv/boot-image-header.rst) also declares
how much memory it needs beyond its file size, which the initrd must not
overlap.
"""

import os
import struct
from dataclasses import dataclass, field

from ..errors import HartvmError
from ..hostfile import open_checked, read_bounded
from .elf import load_elf, read_elf

LINUX_IMAGE_MAGIC2 = b"RSC\x05"


@dataclass
class Blob:
    paddr: int
    data: bytes


@dataclass
class LoadedImage:
    entry: int
    end: int
    blobs: list[Blob] = field(default_factory=list)
    tohost: int | None = None
    fromhost: int | None = None
    segments: list = field(default_factory=list)    # an ELF's, for what lies outside RAM


def load_file(path: str, ram, default_paddr: int, role: str, elf_only: bool = False) -> LoadedImage:
    """Load ``path`` (a regular file that fits in RAM, see hostfile.py) into ``ram``."""
    fd = open_checked(path, role)
    try:
        head = os.pread(fd, 4, 0)
    finally:
        os.close(fd)
    if head == b"\x7fELF":
        image = read_elf(path)
        blobs = [Blob(paddr, data) for paddr, data in load_elf(image, ram, path)]
        # Every segment counts, in RAM or not, as QEMU's load_elf counts
        # them for the highest address it returns.
        end = max(s.paddr + s.memsize for s in image.segments)
        return LoadedImage(image.entry, end, blobs, image.symbols.get("tohost"),
                           image.symbols.get("fromhost"), image.segments)
    if elf_only:
        raise HartvmError(f"{path}: not an ELF file")
    data = read_bounded(path, role, ram.size)
    if not data:
        raise HartvmError(f"{role} {path}: empty file")
    end = default_paddr + len(data)
    if len(data) >= 64 and data[56:60] == LINUX_IMAGE_MAGIC2:
        image_size = struct.unpack_from("<Q", data, 16)[0]
        end = default_paddr + max(len(data), image_size)
    if not ram.contains(default_paddr, end - default_paddr):
        raise HartvmError(f"{role} {path}: {end - default_paddr} bytes at {default_paddr:#x} "
                          f"do not fit in RAM ({ram.size >> 20} MiB; use more --memory)")
    ram.write(default_paddr, data)
    return LoadedImage(default_paddr, end, [Blob(default_paddr, data)])
