"""The MMIO bus: half-open ranges, no overlaps or empty ranges, dispatch with the right offset."""

import pytest

from hartvm.bus import Bus


class Recorder:
    """A device that answers reads with ``value`` and records every access."""

    def __init__(self, access_sizes=frozenset({1, 2, 4, 8}), value=0):
        self.access_sizes = access_sizes
        self.value = value
        self.accesses = []

    def read(self, offset, size):
        self.accesses.append(("read", offset, size))
        return self.value

    def write(self, offset, size, value):
        self.accesses.append(("write", offset, size, value))


def bus_with(*ranges):
    """A bus with a Recorder at each (base, size); returns the bus and the devices."""
    bus = Bus()
    devices = [Recorder() for _ in ranges]
    for (base, size), device in zip(ranges, devices):
        bus.attach(base, size, device)
    return bus, devices


# --- attaching ------------------------------------------------------------------

@pytest.mark.parametrize("base, size", [
    (0x1000, 0x100),        # the same range
    (0x1000, 1),            # the first byte
    (0x10FF, 1),            # the last byte
    (0x0F00, 0x101),        # ends one byte inside
    (0x10FF, 0x100),        # starts on the last byte
    (0x1080, 0x10),         # inside
    (0x0F00, 0x1000),       # covers it
])
def test_overlapping_ranges_are_refused(base, size):
    bus, (first,) = bus_with((0x1000, 0x100))
    with pytest.raises(ValueError, match="overlaps"):
        bus.attach(base, size, Recorder())
    assert bus.find(base, 1) == ((first, base - 0x1000) if 0x1000 <= base < 0x1100 else (None, 0))


@pytest.mark.parametrize("base, size", [(0x0F00, 0x100), (0x1100, 0x100), (0, 0x1000),
                                        (0x1100, 2**64 - 0x1100)])
def test_adjacent_ranges_are_accepted(base, size):
    bus, (first,) = bus_with((0x1000, 0x100))
    second = Recorder()
    bus.attach(base, size, second)
    assert bus.find(base, 1) == (second, 0)
    assert bus.find(base + size - 1, 1) == (second, size - 1)
    assert bus.find(0x1000, 1) == (first, 0) and bus.find(0x10FF, 1) == (first, 0xFF)


def test_overlap_with_a_neighbour_on_either_side_is_refused():
    bus, _ = bus_with((0x1000, 0x100), (0x3000, 0x100))
    with pytest.raises(ValueError, match="overlaps"):
        bus.attach(0x2000, 0x1001, Recorder())      # reaches the next one
    with pytest.raises(ValueError, match="overlaps"):
        bus.attach(0x10FF, 0x10, Recorder())        # starts inside the previous one
    bus.attach(0x1100, 0x1F00, Recorder())          # exactly the gap


@pytest.mark.parametrize("size", [0, -1, -0x1000])
def test_empty_or_negative_sizes_are_refused(size):
    bus = Bus()
    with pytest.raises(ValueError, match="size"):
        bus.attach(0x1000, size, Recorder())
    assert bus.find(0x1000, 1) == (None, 0)
    bus.attach(0x1000, 1, Recorder())               # the slot is still free


def test_detach_frees_the_range_for_another_device():
    bus, (first, second) = bus_with((0x1000, 0x100), (0x2000, 0x100))
    assert bus.detach(0x1000) is first
    assert bus.find(0x1000, 1) == (None, 0) and bus.find(0x2000, 1) == (second, 0)
    with pytest.raises(KeyError):
        bus.detach(0x1000)                          # nothing there any more
    with pytest.raises(KeyError):
        bus.detach(0x2010)                          # inside a range, not its base
    replacement = Recorder()
    bus.attach(0x1000, 0x100, replacement)
    assert bus.find(0x10FF, 1) == (replacement, 0xFF)


@pytest.mark.parametrize("base, size", [(-1, 0x10), (2**64 - 0x10, 0x11), (2**64, 1)])
def test_ranges_outside_the_physical_address_space_are_refused(base, size):
    with pytest.raises(ValueError, match="outside"):
        Bus().attach(base, size, Recorder())


# --- finding and dispatching ------------------------------------------------------

def test_reads_and_writes_reach_the_device_with_its_offset():
    bus, (low, high) = bus_with((0x1000, 0x100), (0x1000_0000, 0x1000))
    high.value = 0x1122_3344_5566_7788
    assert bus.read(0x1000_0010, 4) == 0x5566_7788          # masked to the access size
    assert bus.read(0x1000_0FF8, 8) == 0x1122_3344_5566_7788
    assert bus.write(0x1000_0004, 2, 0xABCD_1234) is True
    assert bus.write(0x1000, 1, 0x1FF) is True
    assert high.accesses == [("read", 0x10, 4), ("read", 0xFF8, 8), ("write", 4, 2, 0x1234)]
    assert low.accesses == [("write", 0, 1, 0xFF)]


def test_unmapped_addresses_give_no_device():
    bus, (device,) = bus_with((0x1000, 0x100))
    for paddr in (0, 0xFFF, 0x1100, 0x2000, 2**64 - 8):
        assert bus.find(paddr, 1) == (None, 0)
        assert bus.read(paddr, 1) is None
        assert bus.write(paddr, 1, 0) is False
    assert device.accesses == []
    assert Bus().read(0, 4) is None and Bus().write(0, 4, 0) is False


def test_edges_of_the_half_open_range():
    bus, (device,) = bus_with((0x1000, 0x100))
    assert bus.find(0x1000, 8) == (device, 0)                # base is inside
    assert bus.find(0x10F8, 8) == (device, 0xF8)             # ends exactly at base + size
    assert bus.find(0x10FF, 1) == (device, 0xFF)             # the last byte
    assert bus.find(0x1100, 1) == (None, 0)                  # base + size is outside
    assert bus.find(0x10F9, 8) == (None, 0)                  # runs one byte past the end
    assert bus.find(0x10FF, 2) == (None, 0)
    assert bus.find(0x0FFF, 1) == (None, 0)                  # the byte before base
    assert bus.read(0x10FF, 2) is None and bus.write(0x10F9, 8, 0) is False
    assert device.accesses == []


def test_an_access_may_not_span_two_adjacent_devices():
    bus, (first, second) = bus_with((0x1000, 0x100), (0x1100, 0x100))
    assert bus.find(0x10FE, 4) == (None, 0)
    assert bus.read(0x10FC, 4) is not None and bus.read(0x1100, 4) is not None
    assert first.accesses == [("read", 0xFC, 4)] and second.accesses == [("read", 0, 4)]


def test_sizes_the_device_does_not_accept_fault():
    bus = Bus()
    device = Recorder(access_sizes=frozenset({4}))
    bus.attach(0x1000, 0x100, device)
    assert bus.read(0x1000, 4) == 0
    for size in (1, 2, 8):
        assert bus.read(0x1000, size) is None
        assert bus.write(0x1000, size, 0) is False
    assert device.accesses == [("read", 0, 4)]


def test_many_devices_attached_in_any_order_are_found():
    bus = Bus()
    devices = {}
    for base in (0x5000, 0x1000, 0x9000, 0x3000, 0x7000):
        devices[base] = Recorder()
        bus.attach(base, 0x1000, devices[base])
    for base, device in devices.items():
        for offset in (0, 0x7FF, 0xFFF):
            assert bus.find(base + offset, 1) == (device, offset)
    for gap in (0x2000, 0x4000, 0x6000, 0x8000, 0xA000, 0):
        assert bus.find(gap, 1) == (None, 0)
