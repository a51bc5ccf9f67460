"""The snapshot format: a machine's saved state, with guest RAM beside it.

A snapshot is a directory::

    state      header, one section per component, CRC-32 (layout below)
    memory     guest RAM: a sparse file of exactly the RAM size, holes for zero pages
    disk<N>    drive N as the guest saw it (a sparse copy; restores write to overlays of it)

Every file is checked to be a regular file (not a link, device or FIFO).
Restoring maps ``memory`` copy-on-write (``MAP_PRIVATE``) instead of reading
it, so a restore costs the same for 64 MiB as for 1 GiB, and every VM
restored from one snapshot shares its unwritten pages through the host's
page cache.

``state`` (all integers little-endian)::

    magic      8 bytes   b"HARTVMSS"
    version    u32       FORMAT_VERSION
    count      u32       number of sections
    count x    name_length u16, name (UTF-8), section version u32,
               payload_length u64, payload
    crc        u32       zlib.crc32 of every byte before it

A section is one component: ``config`` (what machine to build: memory
size, harts, drives; saved and checked here only), ``machine``,
``hart0``..``hartN``, each board device by its name in the board table
(``rom``, ``syscon``, ``rtc``, ``vmgenid``, ``clint``, ``plic``, ``uart0``),
each virtio device by the name it was attached under (``console``, ``rng``,
``disk0``, ...) and ``vm`` (the guest agent's side). Its version is the
component's ``SAVE_VERSION``; a component refuses a version it does not know.

This module owns the format: ``save`` stages a new snapshot and renames it
into place (a snapshot is there whole or not at all), ``load`` reads and
checks one, ``open_drives`` and ``restore_machine`` bring it back into a
machine built like the saved one (see ``VM``'s two build paths).

A payload is one value in a small typed encoding (a snapshot is untrusted
input, so no pickle): a tag byte, then ``N`` none, ``F``/``T`` booleans,
``I`` int (u8 length, two's complement), ``B`` bytes and ``S`` str (u64
length), ``L`` list (u32 count, items), ``D`` dict (u32 count, str key and
value pairs), ``A`` numpy array (u8 dtype code, u8 dimensions, u64 each,
raw data). Decoding checks every length against what is left and bounds
nesting, so a corrupt file fails with ``SnapshotError``, never a crash.
"""

import os
import shutil
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..devices.virtio.blk import Block
from ..errors import HartvmError, shown
from ..limits import check_harts, guest_memory_size
from ..memory import PAGE_SIZE
from . import scratch

MAGIC = b"HARTVMSS"
FORMAT_VERSION = 2        # 2: sections named by the board table, config owns the sizes
CONFIG_VERSION = 1        # of the config section
STATE_FILE = "state"
MEMORY_FILE = "memory"
MAX_DEPTH = 16
MAX_STATE = 256 << 20     # bytes of a state file at most (64 harts take about 5 MiB)
MAX_DIMENSIONS = 7
DTYPES = {1: np.dtype("<i8"), 2: np.dtype("u1"), 3: np.dtype("<i4"), 4: np.dtype("<u8")}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}
HEADER = struct.Struct("<8sII")
SECTION = struct.Struct("<IQ")


class SnapshotError(HartvmError):
    """A snapshot that cannot be used: missing, corrupt, truncated, another version."""


# --- values -------------------------------------------------------------------

def encode(value) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value, out: bytearray) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, bool):
        out += b"T" if value else b"F"
    elif isinstance(value, (int, np.integer)):
        value = int(value)
        raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        out += b"I" + bytes([len(raw)]) + raw
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out += b"B" + struct.pack("<Q", len(value)) + bytes(value)
    elif isinstance(value, str):
        raw = value.encode()
        out += b"S" + struct.pack("<Q", len(raw)) + raw
    elif isinstance(value, (list, tuple)):
        out += b"L" + struct.pack("<I", len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        out += b"D" + struct.pack("<I", len(value))
        for key, item in value.items():
            _encode(str(key), out)
            _encode(item, out)
    elif isinstance(value, np.ndarray) and value.dtype in DTYPE_CODES and value.ndim < 8:
        out += b"A" + bytes([DTYPE_CODES[value.dtype], value.ndim])
        out += struct.pack(f"<{value.ndim}Q", *value.shape)
        out += np.ascontiguousarray(value).tobytes()
    else:
        raise TypeError(f"cannot save a {type(value).__name__} in a snapshot")


class _Decoder:
    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, length: int) -> bytes:
        if length < 0 or self.position + length > len(self.data):
            raise SnapshotError("a section ends too early")
        chunk = self.data[self.position:self.position + length]
        self.position += length
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def value(self, depth: int = 0):
        if depth > MAX_DEPTH:
            raise SnapshotError("a section nests too deep")
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag in (b"T", b"F"):
            return tag == b"T"
        if tag == b"I":
            return int.from_bytes(self.take(self.take(1)[0]), "little", signed=True)
        if tag == b"B":
            return self.take(self.unpack("<Q")[0])
        if tag == b"S":
            try:
                return self.take(self.unpack("<Q")[0]).decode()
            except UnicodeDecodeError:
                raise SnapshotError("a section holds a malformed string") from None
        if tag == b"L":
            (count,) = self.unpack("<I")
            return [self.value(depth + 1) for _ in range(min(count, len(self.data)))]
        if tag == b"D":
            (count,) = self.unpack("<I")
            result = {}
            for _ in range(min(count, len(self.data))):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise SnapshotError("a section holds a dictionary with a non-text key")
                result[key] = self.value(depth + 1)
            return result
        if tag == b"A":
            code, ndim = self.take(2)
            if code not in DTYPES or ndim > MAX_DIMENSIONS:
                raise SnapshotError(f"a section holds an array of unknown type {code} "
                                    f"or {ndim} dimensions")
            shape = self.unpack(f"<{ndim}Q")
            if any(size >= 1 << 31 for size in shape):
                raise SnapshotError("a section holds an array too large")
            count = int(np.prod(shape, dtype=object)) if shape else 1
            raw = self.take(count * DTYPES[code].itemsize)
            return np.frombuffer(raw, DTYPES[code]).reshape(shape).copy()
        raise SnapshotError(f"a section holds an unknown value tag {tag!r}")


def decode(data: bytes):
    decoder = _Decoder(data)
    value = decoder.value()
    if decoder.position != len(data):
        raise SnapshotError("a section has bytes after its value")
    return value


# --- the state file -------------------------------------------------------------

def write_state(path: Path, sections: list[tuple[str, int, object]]) -> None:
    """Write ``(name, version, value)`` sections to the state file ``path``."""
    out = bytearray(HEADER.pack(MAGIC, FORMAT_VERSION, len(sections)))
    for name, version, value in sections:
        raw_name = name.encode()
        payload = encode(value)
        out += struct.pack("<H", len(raw_name)) + raw_name
        out += SECTION.pack(version, len(payload)) + payload
    out += struct.pack("<I", zlib.crc32(out))
    with open(path, "wb") as file:
        file.write(out)
        file.flush()
        os.fsync(file.fileno())


def check_regular_file(path: Path) -> None:
    """A file of a snapshot must be a regular file, not a link, device or FIFO
    (which could hang hartvm or hand it any host file)."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise SnapshotError(f"{path}: not a regular file")


def read_state(directory) -> dict[str, tuple[int, object]]:
    """The sections of the snapshot in ``directory``: name -> (version, value)."""
    path = Path(directory) / STATE_FILE
    try:
        check_regular_file(path)
        with open(path, "rb") as file:
            data = file.read(MAX_STATE + 1)
    except FileNotFoundError:
        raise SnapshotError(f"{directory}: not a hartvm snapshot (no {STATE_FILE} file)") from None
    except OSError as error:
        raise SnapshotError(f"{path}: {error.strerror or error}") from None
    if len(data) > MAX_STATE:
        raise SnapshotError(f"{path}: larger than any snapshot state ({MAX_STATE} bytes)")
    if len(data) < HEADER.size + 4 or data[:8] != MAGIC:
        raise SnapshotError(f"{directory}: not a hartvm snapshot (bad magic)")
    magic, version, count = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise SnapshotError(f"{directory}: snapshot format version {version}; this hartvm "
                            f"reads version {FORMAT_VERSION}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise SnapshotError(f"{directory}: the snapshot is corrupt or truncated (CRC mismatch)")
    decoder = _Decoder(data[HEADER.size:-4])
    sections = {}
    for _ in range(count):
        (name_length,) = decoder.unpack("<H")
        name = decoder.take(name_length).decode(errors="replace")
        section_version, length = decoder.unpack("<IQ")
        if name in sections:
            raise SnapshotError(f"{directory}: section {name!r} appears twice")
        sections[name] = (section_version, decode(decoder.take(length)))
    if decoder.position != len(decoder.data):
        raise SnapshotError(f"{directory}: bytes after the last section")
    return sections


# --- guest RAM ----------------------------------------------------------------------

def write_memory(ram, path: Path) -> int:
    """Write guest RAM to ``path`` as a sparse file: pages of zeros stay holes.
    Returns the bytes of data written."""
    pages = ram.m64.reshape(-1, PAGE_SIZE // 8)
    nonzero = np.flatnonzero(pages.any(axis=1))
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, ram.size)
        # Runs of consecutive pages go out in one write each.
        if len(nonzero):
            breaks = np.flatnonzero(np.diff(nonzero) != 1) + 1
            for run in np.split(nonzero, breaks):
                start, end = int(run[0]) * PAGE_SIZE, (int(run[-1]) + 1) * PAGE_SIZE
                view = memoryview(ram.m8[start:end]).cast("B")
                offset = 0
                while offset < len(view):
                    offset += os.pwrite(fd, view[offset:], start + offset)
                written += end - start
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def open_memory(directory, size: int) -> int:
    """An fd of the snapshot's RAM file, checked to be ``size`` bytes long."""
    path = Path(directory) / MEMORY_FILE
    try:
        check_regular_file(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as error:
        raise SnapshotError(f"{path}: {error.strerror or error}") from None
    actual = os.fstat(fd).st_size
    if actual != size:
        os.close(fd)
        raise SnapshotError(f"{path}: {actual} bytes, but the snapshot's guest has {size} "
                            f"bytes of RAM (truncated or mismatched)")
    return fd



# --- a machine -----------------------------------------------------------------------

def machine_sections(machine) -> list[tuple[str, int, object]]:
    """The machine's sections, in restore order."""
    sections = [("machine", machine.SAVE_VERSION, machine.save())]
    for name, component in machine.components():
        sections.append((name, component.SAVE_VERSION, component.save()))
    return sections


def restore_machine(machine, snapshot: "Snapshot") -> None:
    """Restore every component of ``machine`` (built like the saved one) from
    the snapshot. Any invalid or missing section raises SnapshotError; the
    caller then drops the machine, so no half-restored machine is ever used."""
    sections, directory = snapshot.sections, snapshot.directory
    parts = [("machine", machine)] + machine.components()
    expected = {name for name, _ in parts}
    extra = {name for name in sections if name.startswith("hart")} - expected
    if extra:
        raise SnapshotError(f"{directory}: the snapshot's machine has {', '.join(sorted(extra))}, "
                            f"which this machine lacks")
    for name, component in parts:
        if name not in sections:
            raise SnapshotError(f"{directory}: section {name!r} is missing")
        version, state = sections[name]
        if version != component.SAVE_VERSION:
            raise SnapshotError(f"{directory}: section {name!r} has version {version}; this "
                                f"hartvm reads version {component.SAVE_VERSION}")
        try:
            component.restore(state)
        except (ValueError, KeyError, TypeError, IndexError, OverflowError,
                AttributeError) as error:
            raise SnapshotError(f"{directory}: section {name!r} is invalid: {error}") from None


# --- whole snapshots ------------------------------------------------------------------

def drive_file(directory, index: int) -> Path:
    return Path(directory) / f"disk{index}"


def save(path, machine, drives, owner: tuple[str, int, dict], copy_drives: bool = True) -> None:
    """Save ``machine`` with its ``drives`` (virtio Blocks) as the new snapshot
    directory ``path``: staged beside it, then renamed into place. ``owner``
    is the (name, version, state) section of whoever runs the guest (the VM).
    ``copy_drives``: keep a sparse copy of each drive as the guest sees it
    (else the caller keeps the drives, as a fork does)."""
    path = Path(path)
    staging = None
    try:
        if os.path.lexists(path):
            raise HartvmError(f"{shown(path)} already exists; a snapshot is never written over")
        # Hidden beside the destination, so that the rename is atomic; a
        # staging directory of a killed hartvm is swept by the next save.
        staging = scratch.make(f".{path.name}.", path.parent)
        infos = []
        for index, block in enumerate(drives):
            if copy_drives:
                block.export(str(drive_file(staging, index)))
            infos.append({"path": os.path.abspath(block.path), "readonly": block.readonly,
                          "size": block.size})
        config = {"hartvm": __version__, "memory_size": machine.ram.size,
                  "harts": len(machine.harts), "drives": infos}
        sections = [("config", CONFIG_VERSION, config)] + machine_sections(machine) + [owner]
        write_memory(machine.ram, staging / MEMORY_FILE)
        write_state(staging / STATE_FILE, sections)
        os.rename(staging, path)
    except OSError as error:
        raise HartvmError(f"cannot write the snapshot {shown(path)}: "
                          f"{error.strerror or error}") from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Snapshot:
    """A snapshot read and checked: what machine to build, and its sections."""
    directory: Path
    memory_size: int
    harts: int
    drives: list[dict]         # each: path, readonly, size (checked)
    sections: dict

    def owner_section(self, name: str, version: int) -> dict:
        """The owner's section (see ``save``), checked to be of ``version``."""
        return _section(self.sections, name, version, self.directory)

    def open_memory(self) -> int:
        return open_memory(self.directory, self.memory_size)


def _section(sections: dict, name: str, version: int, directory) -> dict:
    saved_version, value = sections.get(name, (None, None))
    if saved_version != version or not isinstance(value, dict):
        raise SnapshotError(f"{directory}: section {name!r} is missing or of another version")
    return value


def load(directory) -> Snapshot:
    """Read the snapshot in ``directory`` and check its configuration: memory
    size and harts within limits, a well-formed drive list."""
    sections = read_state(directory)
    config = _section(sections, "config", CONFIG_VERSION, directory)
    try:
        size = guest_memory_size(config.get("memory_size"))
        harts = check_harts(config.get("harts"))
    except HartvmError as error:
        raise SnapshotError(f"{directory}: bad machine configuration in the snapshot: "
                            f"{error}") from None
    drives = config.get("drives")
    if not isinstance(drives, list) or not all(
            isinstance(info, dict) and isinstance(info.get("readonly"), bool) and
            type(info.get("size")) is int and isinstance(info.get("path"), str)
            for info in drives):
        raise SnapshotError(f"{directory}: bad drive list in the snapshot")
    return Snapshot(Path(directory), size, harts, drives, sections)


def open_drives(snapshot: Snapshot, overlay_dir) -> list[Block]:
    """The snapshot's copies of its drives, each checked (a regular file of the
    recorded size); writable ones get an overlay in ``overlay_dir``, since the
    snapshot's copy is never written."""
    blocks = []
    try:
        for index, info in enumerate(snapshot.drives):
            disk = drive_file(snapshot.directory, index)
            try:
                check_regular_file(disk)
                block = Block(str(disk), readonly=info["readonly"])
            except OSError as error:
                raise SnapshotError(f"{disk}: {error.strerror or error}") from None
            except HartvmError as error:
                raise SnapshotError(str(error)) from None
            blocks.append(block)
            if block.size != info["size"]:
                raise SnapshotError(f"{disk}: {block.size} bytes, the snapshot says "
                                    f"{info['size']} (truncated or mismatched)")
            if not block.readonly:
                block.use_overlay(str(drive_file(overlay_dir, index)))
    except BaseException:
        for block in blocks:
            block.close()
        raise
    return blocks
