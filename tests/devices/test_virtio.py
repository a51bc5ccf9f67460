"""The virtio MMIO transport and split queue against hostile drivers.

A driver is played from Python: registers written through the device,
descriptors and rings written into guest RAM. Bad chains (loops, buffers
outside RAM, oversized requests, bad queue sizes) must end with the device
reporting DEVICE_NEEDS_RESET or an I/O error, never an exception in hartvm.
"""

import struct

import pytest

from hartvm.devices.virtio import mmio
from hartvm.devices.virtio.blk import Block
from hartvm.devices.virtio.queue import F_EVENT_IDX, Chain
from hartvm.devices.virtio.rng import Rng
from hartvm.memory import RAM

BASE = 0x8000_0000
DESC, AVAIL, USED, DATA = BASE + 0x1000, BASE + 0x2000, BASE + 0x3000, BASE + 0x10000
QUEUE = 8


def setup(backend, size=QUEUE, desc=DESC, features=0):
    ram = RAM(BASE, 1 << 20)
    irqs = []
    device = mmio.VirtioMMIO(ram, backend, irqs.append)
    write = lambda offset, value: device.write(offset, 4, value)  # noqa: E731
    assert device.read(0x000, 4) == mmio.MAGIC and device.read(0x004, 4) == 2
    write(0x070, mmio.STATUS_ACKNOWLEDGE | mmio.STATUS_DRIVER)
    write(0x024, 0)
    write(0x020, features & 0xFFFFFFFF)
    write(0x024, 1)
    write(0x020, 1)                                    # VERSION_1
    write(0x070, mmio.STATUS_ACKNOWLEDGE | mmio.STATUS_DRIVER | mmio.STATUS_FEATURES_OK)
    write(0x030, 0)
    write(0x038, size)
    for offset, address in ((0x080, desc), (0x090, AVAIL), (0x0A0, USED)):
        write(offset, address & 0xFFFFFFFF)
        write(offset + 4, address >> 32)
    write(0x044, 1)
    write(0x070, device.status | mmio.STATUS_DRIVER_OK)
    return ram, device, irqs


def descriptor(ram, index, addr, length, flags=0, next_index=0):
    ram.write(DESC + 16 * index, struct.pack("<QIHH", addr, length, flags, next_index))


def offer(ram, device, *heads):
    avail_idx = struct.unpack("<H", ram.read(AVAIL + 2, 2))[0]
    for head in heads:
        ram.write(AVAIL + 4 + 2 * (avail_idx % QUEUE), struct.pack("<H", head))
        avail_idx += 1
    ram.write(AVAIL + 2, struct.pack("<H", avail_idx & 0xFFFF))
    device.write(0x050, 4, 0)


def used_entries(ram):
    count = struct.unpack("<H", ram.read(USED + 2, 2))[0]
    return [struct.unpack("<II", ram.read(USED + 4 + 8 * i, 8)) for i in range(count)]


def test_rng_fills_the_buffer_and_interrupts():
    ram, device, irqs = setup(Rng())
    descriptor(ram, 0, DATA, 32, flags=2)
    offer(ram, device, 0)
    assert used_entries(ram) == [(0, 32)]
    assert ram.read(DATA, 32) != bytes(32)
    assert irqs[-1] is True and device.read(0x060, 4) == 1
    device.write(0x064, 4, 1)
    assert irqs[-1] is False


def test_feature_negotiation_drops_unoffered_features_as_qemu_does():
    """QEMU accepts FEATURES_OK whatever the driver asked for, keeping only the
    offered bits (virtio_set_features_nocheck), VERSION_1 or not."""
    ram = RAM(BASE, 1 << 20)
    device = mmio.VirtioMMIO(ram, Rng())            # offers neither bit 3 nor EVENT_IDX
    device.write(0x024, 4, 0)
    device.write(0x020, 4, 1 << 3 | F_EVENT_IDX)    # word 0 only: no VERSION_1
    device.write(0x070, 4, mmio.STATUS_FEATURES_OK | 3)
    assert device.read(0x070, 4) == mmio.STATUS_FEATURES_OK | 3
    assert device.driver_features == 0
    assert not device.queues[0].event_idx


def test_free_slots_answer_with_device_id_zero():
    """As QEMU's transports without a backend: magic, version and vendor, zero
    elsewhere, writes ignored; a device attached later takes the slot over."""
    from hartvm import HostIO, Machine
    machine = Machine(memory_size=1 << 20, io=HostIO(output=lambda data: None))
    bus = machine.board.bus
    for slot in range(8):
        base = 0x1000_1000 + 0x1000 * slot
        bus.write(base + 0x070, 4, 0xFF)
        assert [bus.read(base + offset, 4) for offset in (0x000, 0x004, 0x008, 0x00C, 0x070)] \
            == [mmio.MAGIC, 2, 0, mmio.QEMU_VENDOR_ID, 0]
    machine.board.attach_virtio("rng", Rng())
    assert bus.read(0x1000_1008, 4) == 4 and bus.read(0x1000_2008, 4) == 0


@pytest.mark.parametrize("chain", [
    "loop", "outside_ram", "huge_length", "bad_index", "indirect_in_indirect", "write_then_read",
])
def test_hostile_chains_set_needs_reset(chain):
    ram, device, irqs = setup(Rng())
    if chain == "loop":
        descriptor(ram, 0, DATA, 16, flags=2 | 1, next_index=1)
        descriptor(ram, 1, DATA, 16, flags=2 | 1, next_index=0)
    elif chain == "outside_ram":
        descriptor(ram, 0, 0x1000, 16, flags=2)
    elif chain == "huge_length":
        descriptor(ram, 0, DATA, 0xFFFFFFFF, flags=2)
    elif chain == "bad_index":
        descriptor(ram, 0, DATA, 16, flags=2 | 1, next_index=500)
    elif chain == "indirect_in_indirect":
        descriptor(ram, 0, DATA, 32, flags=4)
        ram.write(DATA, struct.pack("<QIHH", DATA + 0x100, 16, 4, 0) * 2)
    elif chain == "write_then_read":
        descriptor(ram, 0, DATA, 16, flags=2 | 1, next_index=1)
        descriptor(ram, 1, DATA, 16, flags=0)
    offer(ram, device, 0)
    assert device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET
    assert used_entries(ram) == []
    offer(ram, device, 0)                           # ignored until reset
    device.write(0x070, 4, 0)                       # reset clears it
    assert device.read(0x070, 4) == 0


@pytest.mark.parametrize("size, where", [(0, DESC), (3, DESC), (4096, DESC),
                                         (QUEUE, BASE + (1 << 20) - 8), (QUEUE, 0x1000)])
def test_bad_queue_setup_is_refused(size, where):
    ram, device, irqs = setup(Rng(), size=size, desc=where)
    assert device.read(0x044, 4) == 0
    assert device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET


def test_available_index_running_ahead_is_refused():
    ram, device, irqs = setup(Rng())
    ram.write(AVAIL + 2, struct.pack("<H", 1000))
    device.write(0x050, 4, 0)
    assert device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET


def block_request(ram, device, kind, sector, data_length, payload=b""):
    header = struct.pack("<IIQ", kind, 0, sector)
    ram.write(DATA, header + payload)
    descriptor(ram, 0, DATA, 16 + len(payload), flags=1, next_index=1)
    if data_length:
        descriptor(ram, 1, DATA + 0x1000, data_length, flags=2 | 1, next_index=2)
        descriptor(ram, 2, DATA + 0x3000, 1, flags=2)
    else:
        descriptor(ram, 1, DATA + 0x3000, 1, flags=2)
    ram.write(DATA + 0x3000, b"\xff")
    offer(ram, device, 0)
    return ram.read(DATA + 0x3000, 1)[0]


def block_device(tmp_path, content=bytes(4096), readonly=False):
    """A 4 KiB image file and a virtio-blk device on it, set up by the test driver."""
    image = tmp_path / "disk.img"
    image.write_bytes(content)
    ram, device, irqs = setup(Block(str(image), readonly=readonly))
    return image, ram, device


def test_block_read_write_flush_and_errors(tmp_path):
    image, ram, device = block_device(tmp_path, bytes(range(256)) * 16)   # 8 sectors
    assert device.read(0x100, 4) == 8                     # capacity in sectors
    assert block_request(ram, device, 0, 1, 512) == 0     # read sector 1
    assert ram.read(DATA + 0x1000, 512) == (bytes(range(256)) * 2)
    assert block_request(ram, device, 1, 2, 0, b"\xAA" * 512) == 0   # write sector 2
    assert image.read_bytes()[1024:1536] == b"\xAA" * 512
    assert block_request(ram, device, 4, 0, 0) == 0       # flush
    assert block_request(ram, device, 0, 7, 1024) == 1    # past the end: IOERR
    assert block_request(ram, device, 99, 0, 0) == 2      # unknown request: UNSUPP


def test_read_only_block_refuses_writes(tmp_path):
    image, ram, device = block_device(tmp_path, readonly=True)
    assert device.read(0x010, 4) & (1 << 5)                # VIRTIO_BLK_F_RO offered
    assert block_request(ram, device, 1, 0, 0, b"\x01" * 512) == 1
    assert image.read_bytes() == bytes(4096)


def test_block_status_goes_to_the_last_nonempty_writable_byte(tmp_path):
    image, ram, device = block_device(tmp_path)
    ram.write(DATA, struct.pack("<IIQ", 4, 0, 0))                # FLUSH
    descriptor(ram, 0, DATA, 16, flags=1, next_index=1)
    descriptor(ram, 1, DATA + 0x3000, 1, flags=2 | 1, next_index=2)
    descriptor(ram, 2, BASE, 0, flags=2)                         # empty, at the start of RAM
    ram.write(DATA + 0x3000, b"\xff")
    offer(ram, device, 0)
    assert ram.read(DATA + 0x3000, 1) == b"\x00"
    assert not device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET


def test_block_id_request_does_not_allocate_guest_sized_buffers(tmp_path):
    image, ram, device = block_device(tmp_path)
    ram.write(DATA, struct.pack("<IIQ", 8, 0, 0))                # GET_ID
    descriptor(ram, 0, DATA, 16, flags=1, next_index=1)
    descriptor(ram, 1, BASE, 1 << 20, flags=2)                   # all of RAM, writable
    offer(ram, device, 0)
    assert used_entries(ram) == [(0, 21)]                         # 20 id bytes + status
    assert ram.read(BASE, 4) == b"disk"


# --- event suppression (VIRTIO_F_EVENT_IDX, virtio 1.2 sections 2.7.7.2 and 2.7.10) ---

USED_EVENT = AVAIL + 4 + 2 * QUEUE      # the driver's: interrupt me past this used index
AVAIL_EVENT = USED + 4 + 8 * QUEUE      # the device's: notify me past this available index


def event_idx_rng():
    rng = Rng()
    rng.features |= F_EVENT_IDX
    ram, device, irqs = setup(rng, features=F_EVENT_IDX)
    for index in range(QUEUE):
        descriptor(ram, index, DATA + 0x100 * index, 16, flags=2)
    return ram, device, irqs


def test_event_idx_interrupts_only_past_the_drivers_used_event():
    ram, device, irqs = event_idx_rng()
    offer(ram, device, 0)
    assert irqs[-1] is True                          # the first used buffer always interrupts
    device.write(0x064, 4, 1)
    ram.write(USED_EVENT, struct.pack("<H", 3))      # "when the entry at index 3 is used"
    for head, interrupts in ((1, False), (2, False), (3, True)):
        offer(ram, device, head)
        assert (irqs[-1] is True) == interrupts, head
    assert len(used_entries(ram)) == 4
    device.write(0x064, 4, 1)
    ram.write(USED_EVENT, struct.pack("<H", 1))      # behind: no interrupt until it moves
    offer(ram, device, 4)
    assert irqs[-1] is False


def test_event_idx_device_asks_for_a_notification_at_the_next_buffer():
    ram, device, irqs = event_idx_rng()
    offer(ram, device, 0, 1, 2)
    assert struct.unpack("<H", ram.read(AVAIL_EVENT, 2))[0] == 3


def test_without_event_idx_every_used_buffer_interrupts_and_avail_event_is_untouched():
    ram, device, irqs = setup(Rng())
    ram.write(USED_EVENT, struct.pack("<H", 100))
    for head in range(3):
        descriptor(ram, head, DATA + 0x100 * head, 16, flags=2)
        offer(ram, device, head)
        assert irqs[-1] is True
        device.write(0x064, 4, 1)
    assert ram.read(AVAIL_EVENT, 2) == bytes(2)


def test_chain_write_fills_a_multi_buffer_chain_from_an_offset():
    ram = RAM(BASE, 1 << 20)
    chain = Chain(0, writable=[(DATA, 4), (DATA + 0x100, 8)])
    assert chain.write(ram, memoryview(b"abcdefghijklmnop")[2:9], start=2) == 7
    assert ram.read(DATA, 4) == b"\0\0cd" and ram.read(DATA + 0x100, 8) == b"efghi\0\0\0"
    assert chain.write(ram, b"0123456789abcdef") == 12      # never past the chain's end
