"""Opening the host files a user names (kernel, firmware, initrd, drives).

Only regular files (and, for drives, block devices) are taken: a FIFO would
hang hartvm waiting for a writer, ``/dev/zero`` or any endless file would
be read until the host runs out of memory, and a directory is no disk. The
file is opened without blocking and checked with ``fstat`` on the open
descriptor (so that a rename between a check and the open cannot swap in
something else), and a file that must fit in guest RAM is refused by its
size before a byte of it is read.
"""

import fcntl
import os
import stat

from .errors import HartvmError, shown


def open_checked(path: str, role: str, flags: int = os.O_RDONLY,
                 block_device: bool = False) -> int:
    """A descriptor of ``path``, which must be a regular file (or a block device
    if ``block_device``); HartvmError with one line otherwise."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise HartvmError(f"{role} must be a path (str or os.PathLike), not a {type(path).__name__}")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HartvmError(f"{role} {shown(path)}: no such file") from None
    except OSError as error:
        raise HartvmError(f"{role} {shown(path)}: {error.strerror or error}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or block_device and stat.S_ISBLK(mode)):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) \
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
        wanted = "a regular file or block device" if block_device else "a regular file"
        raise HartvmError(f"{role} {shown(path)}: {kind}, not {wanted}")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def read_bounded(path: str, role: str, limit: int) -> bytes:
    """The whole of the regular file ``path``, refused unread if it is larger
    than ``limit`` bytes (the guest RAM it must fit in)."""
    fd = open_checked(path, role)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise HartvmError(f"{role} {shown(path)}: {size} bytes do not fit in {limit >> 20} MiB "
                              f"of guest RAM (use more --memory)")
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break              # the file got shorter while we read it
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise HartvmError(f"{role} {shown(path)}: {error.strerror or error}") from None
    finally:
        os.close(fd)


def drive_specs(drives) -> list[str]:
    """The ``drives`` a user gave, ``PATH[,readonly]`` each (a str or a path), as
    a list of str; HartvmError for anything else (a lone string would be
    taken letter by letter)."""
    if isinstance(drives, (str, bytes, os.PathLike)) or not isinstance(drives, (list, tuple)):
        raise HartvmError(f"drives must be a list of PATH[,readonly], not a "
                          f"{type(drives).__name__}")
    specs = []
    for spec in drives:
        if isinstance(spec, os.PathLike):
            spec = os.fspath(spec)
        if not isinstance(spec, str):
            raise HartvmError(f"a drive is PATH[,readonly] (a str), not a {type(spec).__name__}")
        specs.append(spec)
    return specs
