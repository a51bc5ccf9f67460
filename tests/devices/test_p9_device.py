"""virtio-9p: the device over the MMIO transport, with chains laid out as Linux lays them.

Requests and replies go through guest RAM: a Tread's reply split between an
11-byte header buffer and data buffers (Linux's zero-copy reads), a Twrite
split the same way, a request longer than msize, a chain with no room for a
reply. None of them may break the device (DEVICE_NEEDS_RESET) or raise.
"""

import errno
import struct

import pytest

from hartvm.devices.virtio import mmio
from hartvm.devices.virtio import p9server as p9
from hartvm.devices.virtio.p9 import DEVICE_ID, F_MOUNT_TAG, VirtioP9
from test_virtio import DATA, descriptor, offer, setup, used_entries


def string(value: bytes) -> bytes:
    return struct.pack("<H", len(value)) + value


def message(kind: int, tag: int, body: bytes) -> bytes:
    return struct.pack("<IBH", 7 + len(body), kind, tag) + body


@pytest.fixture
def device(tmp_path):
    (tmp_path / "file").write_bytes(bytes(range(256)) * 40)
    backend = VirtioP9("hartvm")
    backend.server.set_exports({"0": (str(tmp_path), False)})
    ram, transport, _ = setup(backend)
    yield ram, transport, backend
    backend.close()


def exchange(ram, transport, request: bytes, *writable: int, head=0) -> list[bytes]:
    """One chain: ``request`` in one readable buffer, then writable buffers of the
    given sizes; returns what the device wrote into each."""
    addresses = []
    descriptor(ram, head, DATA, len(request), flags=1, next_index=head + 1)
    ram.write(DATA, request)
    address = DATA + 0x1000
    for i, size in enumerate(writable):
        last = i == len(writable) - 1
        descriptor(ram, head + 1 + i, address, size, flags=2 | (0 if last else 1),
                   next_index=head + 2 + i)
        addresses.append((address, size))
        ram.write(address, bytes(size))
        address += max(size, 0x1000)
    before = len(used_entries(ram))
    offer(ram, transport, head)
    assert len(used_entries(ram)) == before + 1
    assert not transport.read(mmio.STATUS, 4) & mmio.STATUS_NEEDS_RESET
    return [ram.read(a, s) for a, s in addresses]


def test_identity_and_mount_tag(device):
    _, transport, _ = device
    assert transport.read(mmio.DEVICE_ID, 4) == DEVICE_ID == 9
    transport.write(mmio.DEVICE_FEATURES_SEL, 4, 0)
    assert transport.read(mmio.DEVICE_FEATURES, 4) & F_MOUNT_TAG
    config = bytes(transport.read(mmio.CONFIG + i, 1) for i in range(8))
    assert config == struct.pack("<H", 6) + b"hartvm"


def test_a_session_with_split_replies_and_writes(device, tmp_path):
    ram, transport, _ = device
    exchange(ram, transport, message(p9.TVERSION, 0, struct.pack("<I", 65536)
                                     + string(b"9P2000.L")), 64)
    exchange(ram, transport, message(p9.TATTACH, 1, struct.pack("<II", 0, p9.NOFID)
                                     + string(b"") + string(b"0") + struct.pack("<I", 0)), 64)
    exchange(ram, transport, message(p9.TWALK, 2, struct.pack("<IIH", 0, 1, 1)
                                     + string(b"file")), 64)
    exchange(ram, transport, message(p9.TLOPEN, 3, struct.pack("<II", 1, 2)), 64)
    header, data = exchange(ram, transport, message(p9.TREAD, 4, struct.pack("<IQI", 1, 16,
                                                                              8192)), 11, 8192)
    assert struct.unpack("<IBHI", header) == (11 + 8192, p9.TREAD + 1, 4, 8192)
    assert data == (bytes(range(256)) * 40)[16:16 + 8192]
    # A zero-copy write: the header in one readable buffer, the data in another.
    payload = b"from the guest" * 100
    head = message(p9.TWRITE, 5, struct.pack("<IQI", 1, 0, len(payload)))
    head = struct.pack("<I", len(head) + len(payload)) + head[4:]
    descriptor(ram, 0, DATA, len(head), flags=1, next_index=1)
    descriptor(ram, 1, DATA + 0x1000, len(payload), flags=1, next_index=2)
    descriptor(ram, 2, DATA + 0x2000, 11, flags=2)
    ram.write(DATA, head)
    ram.write(DATA + 0x1000, payload)
    offer(ram, transport, 0)
    assert struct.unpack("<IBHI", ram.read(DATA + 0x2000, 11)) == (11, p9.TWRITE + 1, 5,
                                                                    len(payload))
    assert (tmp_path / "file").read_bytes()[:len(payload)] == payload


def test_oversized_and_roomless_chains_leave_the_device_working(device):
    ram, transport, backend = device
    exchange(ram, transport, message(p9.TVERSION, 0, struct.pack("<I", 8192)
                                     + string(b"9P2000.L")), 64)
    huge = message(p9.TWRITE, 7, bytes(20000))
    (reply,) = exchange(ram, transport, huge, 64)
    assert struct.unpack_from("<IBHI", reply) == (11, p9.RLERROR, 7, errno.EMSGSIZE)
    (reply,) = exchange(ram, transport, message(p9.TCLUNK, 8, struct.pack("<I", 0)), 5)
    assert reply == bytes(5)                         # no room even for an Rlerror
    assert used_entries(ram)[-1][1] == 0
    (reply,) = exchange(ram, transport, b"\x01\x02", 64)
    assert struct.unpack_from("<IBHI", reply) == (11, p9.RLERROR, p9.NOTAG, errno.EINVAL)
    transport.write(mmio.STATUS, 4, 0)               # a driver reset ends the session
    assert backend.server.fids == {}
