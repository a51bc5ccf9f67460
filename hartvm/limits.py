"""Sizes, limits and defaults that the command line needs before it knows what
it will run; importable without numpy or numba, so that light commands
(``hartvm exec``, ``ps``, ``stop``) start fast."""

from .errors import HartvmError

MAX_HARTS = 64
DEFAULT_MEMORY = 128 << 20        # a bare machine (``hartvm boot``)
DEFAULT_GUEST_MEMORY = 256 << 20  # the default Debian guest
MIN_GUEST_MEMORY = 128 << 20   # Debian's kernel does not boot in 64 MiB (on QEMU neither)


def parse_size(text: str) -> int:
    """'128M', '1G', '65536' -> bytes. Raises HartvmError for anything else."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in units:
        number, unit = cleaned[:-1], cleaned[-1]
    if not number.isdigit():
        raise HartvmError(f"bad size {text!r}: use a number with an optional K, M or G suffix")
    return int(number) * units[unit]


def guest_memory_size(memory) -> int:
    """The RAM of a default guest, given as "256M" or bytes, checked."""
    size = parse_size(memory) if isinstance(memory, str) else int(memory)
    if size < MIN_GUEST_MEMORY or size % 4096:
        raise HartvmError(f"bad memory size {memory!r}: the default guest needs at least "
                          f"{MIN_GUEST_MEMORY >> 20} MiB, in whole 4 KiB pages")
    return size
