"""The multiport virtio-console's control protocol, played from Python (virtio 1.2 5.3.6.2).

Linux drives the device in the guest-agent tests; here a hand-written driver
checks the handshake messages, that malformed control messages from a
hostile driver are ignored without harm, and that a host stream reaches the
guest whole whatever the shapes of its buffers.
"""

import struct

from hartvm.devices.virtio import console as vc
from hartvm.devices.virtio import mmio
from hartvm.devices.virtio.queue import F_EVENT_IDX
from hartvm.memory import RAM

BASE = 0x8000_0000
SIZE = 8


class Driver:
    """Just enough of a driver: queues 2 (control in) and 3 (control out), and
    the ``data_queues`` asked for."""

    def __init__(self, backend, data_queues=(), features=vc.F_MULTIPORT):
        self.ram = RAM(BASE, 1 << 20)
        self.device = mmio.VirtioMMIO(self.ram, backend)
        self.rings = {}
        write = self.write
        write(0x070, 3)
        write(0x024, 1), write(0x020, 1)
        write(0x024, 0), write(0x020, features)
        write(0x070, 3 | mmio.STATUS_FEATURES_OK)
        for queue in (vc.CONTROL_RECEIVE, vc.CONTROL_TRANSMIT, *data_queues):
            area = BASE + 0x10000 * (queue + 1)
            desc, avail, used = area, area + 0x1000, area + 0x2000
            write(0x030, queue), write(0x038, SIZE)
            for offset, address in ((0x080, desc), (0x090, avail), (0x0A0, used)):
                write(offset, address & 0xFFFFFFFF), write(offset + 4, address >> 32)
            write(0x044, 1)
            self.rings[queue] = [desc, avail, used, 0, 0]   # ..., next avail, used seen
        write(0x070, self.device.status | mmio.STATUS_DRIVER_OK)
        for index in range(SIZE):                            # receive buffers
            self.offer(vc.CONTROL_RECEIVE, index, BASE + 0x80000 + 256 * index, 256, writable=True)

    def write(self, offset, value):
        self.device.write(offset, 4, value)

    def offer(self, queue, index, addr, length, writable=False):
        desc, avail, _, next_avail, _ = self.rings[queue]
        self.ram.write(desc + 16 * index, struct.pack("<QIHH", addr, length, 2 if writable else 0, 0))
        self.ram.write(avail + 4 + 2 * (next_avail % SIZE), struct.pack("<H", index))
        self.rings[queue][3] = next_avail + 1
        self.ram.write(avail + 2, struct.pack("<H", next_avail + 1))
        self.write(0x050, queue)

    def offer_chain(self, queue, index, buffers):
        """A chain of device-writable ``(address, length)`` buffers, descriptors
        ``index`` on; returns nothing, the used ring says what came."""
        desc, avail, _, next_avail, _ = self.rings[queue]
        for i, (addr, length) in enumerate(buffers):
            more = i + 1 < len(buffers)
            self.ram.write(desc + 16 * (index + i),
                           struct.pack("<QIHH", addr, length, 2 | more, index + i + 1))
        self.ram.write(avail + 4 + 2 * (next_avail % SIZE), struct.pack("<H", index))
        self.rings[queue][3] = next_avail + 1
        self.ram.write(avail + 2, struct.pack("<H", (next_avail + 1) & 0xFFFF))
        self.write(0x050, queue)

    def used_since(self, queue):
        """(head, length) of the chains used since the last call."""
        _, _, used, _, seen = self.rings[queue]
        count = struct.unpack("<H", self.ram.read(used + 2, 2))[0]
        self.rings[queue][4] = count
        return [struct.unpack("<II", self.ram.read(used + 4 + 8 * (i % SIZE), 8))
                for i in range(seen, count)]

    def send(self, message: bytes):
        self.ram.write(BASE + 0xF0000, message)
        self.offer(vc.CONTROL_TRANSMIT, 0, BASE + 0xF0000, len(message))

    def received(self):
        """Control messages the device put in the receive queue since the last call."""
        _, _, used, _, seen = self.rings[vc.CONTROL_RECEIVE]
        count = struct.unpack("<H", self.ram.read(used + 2, 2))[0]
        messages = []
        for i in range(seen, count):
            head, length = struct.unpack("<II", self.ram.read(used + 4 + 8 * (i % SIZE), 8))
            data = self.ram.read(BASE + 0x80000 + 256 * head, length)
            messages.append(vc.CONTROL.unpack_from(data) + (data[vc.CONTROL.size:],))
            self.offer(vc.CONTROL_RECEIVE, head, BASE + 0x80000 + 256 * head, 256, writable=True)
        self.rings[vc.CONTROL_RECEIVE][4] = count
        return messages


def make_console():
    console = vc.VirtioConsole()
    console.add_port(lambda data: None, console=True)
    console.add_port(lambda data: None, name="org.example.data")
    return console


def test_handshake_announces_names_and_host_state():
    driver = Driver(make_console())
    driver.send(vc.CONTROL.pack(0, vc.DEVICE_READY, 1))
    assert [m[:2] for m in driver.received()] == [(0, vc.DEVICE_ADD), (1, vc.DEVICE_ADD)]
    driver.send(vc.CONTROL.pack(0, vc.PORT_READY, 1))
    driver.send(vc.CONTROL.pack(1, vc.PORT_READY, 1))
    messages = driver.received()
    assert (0, vc.CONSOLE_PORT, 1, b"") in messages
    assert (1, vc.PORT_NAME, 1, b"org.example.data") in messages
    assert (1, vc.PORT_OPEN, 1, b"") in messages


def test_end_of_input_closes_the_host_side_once_the_guest_has_opened_the_port():
    console = make_console()
    driver = Driver(console)
    driver.send(vc.CONTROL.pack(0, vc.DEVICE_READY, 1))
    driver.send(vc.CONTROL.pack(1, vc.PORT_READY, 1))
    driver.received()
    console.ports[1].end_input()
    assert driver.received() == []                  # not open in the guest yet: nothing to end
    driver.send(vc.CONTROL.pack(1, vc.PORT_OPEN, 1))
    assert driver.received() == [(1, vc.PORT_OPEN, 0, b"")]
    driver.send(vc.CONTROL.pack(1, vc.PORT_OPEN, 0))  # the reader closes: ready for the next
    assert driver.received() == [(1, vc.PORT_OPEN, 1, b"")]


def test_hostile_control_messages_are_ignored():
    driver = Driver(make_console())
    for message in (b"", b"\x01\x02\x03", vc.CONTROL.pack(99, vc.PORT_READY, 1),
                    vc.CONTROL.pack(0xFFFFFFFF, vc.PORT_OPEN, 1),
                    vc.CONTROL.pack(1, 0xFFFF, 0xFFFF), vc.CONTROL.pack(0, vc.DEVICE_READY, 7),
                    vc.CONTROL.pack(1, vc.PORT_NAME, 1) + b"x" * 200):
        driver.send(message)
    assert not driver.device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET
    assert driver.received() == []
    driver.send(vc.CONTROL.pack(0, vc.DEVICE_READY, 1))  # and the device still works
    assert len(driver.received()) == 2


def test_a_stream_reaches_the_guest_whole_through_buffers_of_any_shape():
    """Host chunks and guest buffers of unrelated sizes, one- and two-part
    chains: every byte arrives once, in order (the device copies each chunk
    straight into the guest's buffers, resuming within a chunk)."""
    console = make_console()
    queue = vc.receive_queue(1)
    driver = Driver(console, data_queues=(queue,), features=vc.F_MULTIPORT | F_EVENT_IDX)
    driver.send(vc.CONTROL.pack(0, vc.DEVICE_READY, 1))
    driver.send(vc.CONTROL.pack(1, vc.PORT_READY, 1))
    driver.send(vc.CONTROL.pack(1, vc.PORT_OPEN, 1))
    data = bytes(range(251)) * 200
    for start, end in ((0, 1), (1, 4096), (4096, 14000), (14000, len(data))):
        console.ports[1].send(data[start:end])
    shapes = [[3], [4096], [100, 900], [1], [2500, 7]]
    received, turn = bytearray(), 0
    while len(received) < len(data):
        buffers, addr = [], BASE + 0xA0000
        for length in shapes[turn % len(shapes)]:
            buffers.append((addr, length))
            addr += 0x2000
        driver.offer_chain(queue, 0, buffers)
        [(head, length)] = driver.used_since(queue)
        assert head == 0
        for addr, size in buffers:
            received += driver.ram.read(addr, min(size, length))
            length -= min(size, length)
        turn += 1
    assert bytes(received) == data and console.ports[1].pending_bytes == 0
    assert not driver.device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET
