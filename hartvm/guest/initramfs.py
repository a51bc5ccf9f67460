"""An initramfs writer: the "newc" cpio format the Linux kernel unpacks at boot.

Format: Documentation/driver-api/early-userspace/buffer-format.rst. Each
entry is a 110-byte ASCII header (magic 070701 and thirteen 8-digit hex
fields), the NUL-terminated name padded to 4 bytes, then the data padded
to 4 bytes; the archive ends with the entry "TRAILER!!!".
"""

import stat

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class Initramfs:
    def __init__(self):
        self._entries: list[tuple[str, int, bytes, int, int]] = []
        self._names: set[str] = set()

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if not name or name in self._names:
            raise ValueError(f"bad or duplicate initramfs entry {name!r}")
        parent = name.rpartition("/")[0]
        if parent and parent not in self._names:
            self.directory(parent)
        self._names.add(name)
        self._entries.append((name, mode, data, *rdev))

    def directory(self, name: str, mode: int = 0o755) -> "Initramfs":
        self._add(name, stat.S_IFDIR | mode)
        return self

    def file(self, name: str, data: bytes, mode: int = 0o644) -> "Initramfs":
        self._add(name, stat.S_IFREG | mode, data)
        return self

    def symlink(self, name: str, target: str) -> "Initramfs":
        self._add(name, stat.S_IFLNK | 0o777, target.encode())
        return self

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> "Initramfs":
        self._add(name, stat.S_IFCHR | mode, rdev=(major, minor))
        return self

    def build(self) -> bytes:
        out = bytearray()
        entries = self._entries + [(TRAILER, 0, b"", 0, 0)]
        for inode, (name, mode, data, rmajor, rminor) in enumerate(entries, 1):
            encoded = name.encode() + b"\0"
            nlink = 2 if stat.S_ISDIR(mode) else 1
            fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor,
                      len(encoded), 0)
            out += NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
            out += encoded + b"\0" * (-(110 + len(encoded)) % 4)
            out += data + b"\0" * (-len(data) % 4)
        return bytes(out)
