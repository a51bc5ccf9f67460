"""A flattened device tree (DTB) writer.

Builds the binary format of the Devicetree Specification 0.4, chapter 5:
a header, an empty memory-reservation block, the structure block (nodes
and properties as big-endian tokens) and the strings block holding the
property names.
"""

import struct

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_END = 9
VERSION = 17
LAST_COMPATIBLE_VERSION = 16
HEADER_SIZE = 40


def cells(*values: int) -> bytes:
    """32-bit big-endian cells (a 64-bit value is given as two cells by the caller)."""
    return b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in values)


def addr_size(address: int, size: int) -> bytes:
    """A reg entry with #address-cells = #size-cells = 2."""
    return cells(address >> 32, address, size >> 32, size)


def strings(*texts: str) -> bytes:
    return b"".join(t.encode() + b"\0" for t in texts)


class Node:
    def __init__(self, name: str = ""):
        self.name = name
        self.properties: list[tuple[str, bytes]] = []
        self.children: list["Node"] = []

    def set(self, name: str, value=b"") -> "Node":
        """Add a property: bytes as they are, str as a string, int as one cell,
        a tuple of str as a string list, a tuple of int as cells."""
        if isinstance(value, str):
            value = strings(value)
        elif isinstance(value, int):
            value = cells(value)
        elif isinstance(value, tuple):
            value = strings(*value) if all(isinstance(v, str) for v in value) else cells(*value)
        self.properties.append((name, bytes(value)))
        return self

    def child(self, name: str) -> "Node":
        node = Node(name)
        self.children.append(node)
        return node


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def to_dtb(root: Node, boot_cpuid: int = 0) -> bytes:
    names: dict[str, int] = {}
    string_block = bytearray()
    structure = bytearray()

    def name_offset(name: str) -> int:
        if name not in names:
            names[name] = len(string_block)
            string_block.extend(name.encode() + b"\0")
        return names[name]

    def emit(node: Node) -> None:
        structure.extend(struct.pack(">I", FDT_BEGIN_NODE) + _pad(node.name.encode() + b"\0"))
        for name, value in node.properties:
            structure.extend(struct.pack(">III", FDT_PROP, len(value), name_offset(name)))
            structure.extend(_pad(value))
        for child in node.children:
            emit(child)
        structure.extend(struct.pack(">I", FDT_END_NODE))

    emit(root)
    structure.extend(struct.pack(">I", FDT_END))
    reservations = bytes(16)  # no reserved regions: one terminating entry
    off_rsvmap = HEADER_SIZE
    off_struct = off_rsvmap + len(reservations)
    off_strings = off_struct + len(structure)
    total = off_strings + len(string_block)
    header = struct.pack(">10I", FDT_MAGIC, total, off_struct, off_strings, off_rsvmap,
                         VERSION, LAST_COMPATIBLE_VERSION, boot_cpuid, len(string_block),
                         len(structure))
    return header + reservations + bytes(structure) + bytes(string_block)
