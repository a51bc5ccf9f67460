"""Host-side access to guest RAM: range checks, and the buffers a device may copy in."""

import numpy as np
import pytest

from hartvm.memory import RAM, GuestMemoryError

BASE = 0x8000_0000


def test_write_takes_any_contiguous_buffer_and_read_returns_bytes():
    ram = RAM(BASE, 1 << 16)
    ram.write(BASE, b"bytes")
    ram.write(BASE + 5, bytearray(b"array"))
    ram.write(BASE + 10, memoryview(b"--a view--")[2:8])       # a slice: no copy made first
    ram.write(BASE + 16, np.arange(4, dtype=np.int32))          # items of four bytes
    assert ram.read(BASE, 16) == b"bytesarraya view"
    assert ram.read(BASE + 16, 16) == np.arange(4, dtype=np.int32).tobytes()
    assert ram.m8[3] == ord("e")                                # the CPU sees the same bytes


@pytest.mark.parametrize("paddr, data", [(BASE - 1, b"xy"), (BASE + (1 << 16) - 1, b"xy"),
                                         (0, b"x")])
def test_writes_outside_ram_are_refused_untouched(paddr, data):
    ram = RAM(BASE, 1 << 16)
    with pytest.raises(GuestMemoryError):
        ram.write(paddr, memoryview(data))
    assert ram.read(BASE, 1) == b"\0" and ram.read(BASE + (1 << 16) - 1, 1) == b"\0"
