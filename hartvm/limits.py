"""Sizes, limits and defaults, each defined once; importable without numpy or
numba, so that light commands (``hartvm exec``, ``ps``, ``stop``) start fast."""

from .errors import HartvmError, quoted

MAX_HARTS = 64
MIN_MEMORY = 1 << 20              # any machine (``hartvm boot``)
MAX_MEMORY = 1 << 40
DEFAULT_MEMORY = 128 << 20        # a bare machine (``hartvm boot``)
MIN_GUEST_MEMORY = 128 << 20      # Debian's kernel does not boot in 64 MiB (on QEMU neither)
DEFAULT_GUEST_MEMORY = 256 << 20  # the default Debian guest
PAGE_SIZE = 4096


def parse_size(text: str) -> int:
    """'128M', '1G', '65536' -> bytes. Raises HartvmError for anything else."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in units:
        number, unit = cleaned[:-1], cleaned[-1]
    if not number.isdigit():
        raise HartvmError(f"bad size {quoted(text)}: use a number with an optional K, M or G suffix")
    return int(number) * units[unit]


def memory_size(memory, minimum: int = MIN_MEMORY) -> int:
    """RAM given as "256M" or bytes, checked: whole pages, ``minimum`` to MAX_MEMORY."""
    size = parse_size(memory) if isinstance(memory, str) else memory
    if type(size) is not int or not minimum <= size <= MAX_MEMORY or size % PAGE_SIZE:
        raise HartvmError(f"bad memory size {quoted(memory)}: must be a multiple of 4 KiB between "
                          f"{minimum >> 20}M and {MAX_MEMORY >> 40}T")
    return size


def guest_memory_size(memory) -> int:
    """The RAM of a default guest: at least MIN_GUEST_MEMORY."""
    return memory_size(memory, MIN_GUEST_MEMORY)


MAX_DISK = 1 << 40               # an image VM's root disk (sparse: only what is written is stored)


def disk_size(size) -> int | None:
    """A root disk's size given as "8G" or bytes (None: the image's own), checked:
    whole MiB, at most MAX_DISK; at least the image's size is checked by the VM."""
    if size is None:
        return None
    value = parse_size(size) if isinstance(size, str) else size
    if type(value) is not int or not 0 < value <= MAX_DISK or value % (1 << 20):
        raise HartvmError(f"bad disk size {quoted(size)}: whole MiB, at most {MAX_DISK >> 40}T")
    return value


def check_harts(harts) -> int:
    if type(harts) is not int or not 1 <= harts <= MAX_HARTS:
        raise HartvmError(f"bad hart count {quoted(harts)}: must be 1 to {MAX_HARTS}")
    return harts
