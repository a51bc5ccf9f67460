"""Loading RISC-V 64-bit ELF executables into guest memory (pyelftools).

Every PT_LOAD segment goes to its physical address (``p_paddr``, as
QEMU's loader does); the rest of a segment beyond its file size is
zero-filled. What lies in RAM is copied there. What lies outside RAM is
not an error, as in QEMU: hw/core/loader.c makes each segment a ROM blob
(``rom_add_elf_program``) and writes it with ``address_space_write_rom``,
which stores the bytes that land in RAM or ROM and skips the rest (MMIO,
no memory at all). So an ELF whose first segment holds only its headers,
below RAM, runs. ``clip`` gives the part of a segment inside a range; the
board puts the boot ROM's part in place (machine.py). The
``tohost``/``fromhost`` symbols, when present, are returned for HTIF.
"""

import os
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..errors import HartvmError
from ..hostfile import open_checked

PT_LOAD = "PT_LOAD"
MAX_SEGMENT = 1 << 40   # no RAM is larger


@dataclass
class Segment:
    paddr: int
    data: bytes
    memsize: int


@dataclass
class ElfImage:
    entry: int
    segments: list[Segment] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)


def read_elf(path: str) -> ElfImage:
    """Parse ``path`` and check that it is a little-endian RV64 executable."""
    try:
        with os.fdopen(open_checked(path, "ELF file"), "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            if file.read(4) != b"\x7fELF":
                raise HartvmError(f"{path}: not an ELF file")
            file.seek(0)
            elf = ELFFile(file)
            if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != "EM_RISCV":
                raise HartvmError(f"{path}: not a RISC-V 64-bit little-endian ELF "
                                  f"(class {elf.elfclass}, machine {elf['e_machine']})")
            image = ElfImage(entry=elf["e_entry"])
            for segment in elf.iter_segments():
                if segment["p_type"] != PT_LOAD or segment["p_memsz"] == 0:
                    continue
                # Check sizes before reading: a corrupt header must not make us
                # read or allocate gigabytes.
                if segment["p_offset"] + segment["p_filesz"] > file_size \
                        or segment["p_filesz"] > segment["p_memsz"] \
                        or segment["p_memsz"] > MAX_SEGMENT:
                    raise HartvmError(f"{path}: truncated or inconsistent segment")
                data = segment.data()
                if len(data) != segment["p_filesz"]:
                    raise HartvmError(f"{path}: truncated segment")
                image.segments.append(Segment(segment["p_paddr"], data, segment["p_memsz"]))
            for section in elf.iter_sections():
                if isinstance(section, SymbolTableSection):
                    for name in ("tohost", "fromhost"):
                        symbols = section.get_symbol_by_name(name)
                        if symbols:
                            image.symbols[name] = symbols[0]["st_value"]
    except FileNotFoundError:
        raise HartvmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HartvmError(f"{path}: is a directory") from None
    except PermissionError:
        raise HartvmError(f"{path}: permission denied") from None
    except HartvmError:
        raise
    except OSError as error:
        raise HartvmError(f"{path}: cannot read ({error.strerror or error})") from None
    except Exception as error:  # pyelftools raises many kinds on corrupt input
        raise HartvmError(f"{path}: corrupt ELF file ({type(error).__name__}: {error})") from None
    if not image.segments:
        raise HartvmError(f"{path}: no loadable segments")
    return image


def clip(segment: Segment, base: int, size: int) -> tuple[int, bytes] | None:
    """The part of ``segment`` (its file bytes, then zeros up to its memory
    size) inside [base, base + size): (address, bytes), or None. Only that
    part is ever built, however large the segment claims to be."""
    start = max(segment.paddr, base)
    end = min(segment.paddr + segment.memsize, base + size)
    if start >= end:
        return None
    data = segment.data[start - segment.paddr:end - segment.paddr]
    return start, data + bytes(end - start - len(data))


def load_elf(image: ElfImage, ram, path: str = "ELF") -> list[tuple[int, bytes]]:
    """Copy what lies in RAM of each segment of ``image`` into ``ram``; the
    rest is left out, as QEMU leaves it (see above). Returns the pieces
    written, as (address, bytes)."""
    pieces = [piece for piece in (clip(segment, ram.base, ram.size)
                                  for segment in image.segments) if piece is not None]
    for paddr, data in pieces:
        ram.write(paddr, data)
    return pieces
