"""virtio-net played from Python (virtio 1.2 section 5.1), and its link to passt.

A hand-written driver checks what Linux relies on (frames both ways, the
checksum offload, a frame per receive buffer, the link state) and what a
hostile driver may try: frames without an Ethernet header, oversized
frames, checksum offsets outside the frame and malformed chains are dropped
or make the device ask for a reset, never an exception in hartvm. The
``PasstLink`` tests play passt with the other end of a socketpair.
"""

import os
import socket
import struct

import pytest

from hartvm.devices.virtio import mmio
from hartvm.devices.virtio import net as vn
from hartvm.devices.virtio.queue import F_EVENT_IDX
from hartvm.hostio import HostIO
from hartvm.memory import RAM
from hartvm.vmm.passt import MAX_UNSENT, PasstLink

BASE = 0x8000_0000
SIZE = 16
MAC = bytes.fromhex("525400123456")
ALL = vn.F_CSUM | vn.F_GUEST_CSUM | vn.F_MTU | vn.F_MAC | vn.F_STATUS
BIG = 16 << 10           # a receive buffer, as Linux's "big packet" chains hold a frame


class Link:
    """A back end that keeps what it is sent."""
    congested = False

    def __init__(self):
        self.frames = []

    def send(self, frames):
        self.frames.extend(frames)


class Driver:
    def __init__(self, features=ALL, link=True):
        self.ram = RAM(BASE, 4 << 20)
        self.irqs = []
        self.net = vn.VirtioNet(MAC)
        self.device = mmio.VirtioMMIO(self.ram, self.net, self.irqs.append)
        self.link = Link() if link else None
        if link:
            self.net.connect(self.link)
        write = self.write
        write(0x070, 3)
        write(0x024, 1), write(0x020, 1 | (features >> 32))
        write(0x024, 0), write(0x020, features & 0xFFFFFFFF)
        write(0x070, 3 | mmio.STATUS_FEATURES_OK)
        assert self.device.read(0x070, 4) & mmio.STATUS_FEATURES_OK
        self.rings = {}
        for queue in (vn.RECEIVE, vn.TRANSMIT):
            area = BASE + 0x10000 * (queue + 1)
            write(0x030, queue), write(0x038, SIZE)
            for offset, address in ((0x080, area), (0x090, area + 0x1000), (0x0A0, area + 0x2000)):
                write(offset, address & 0xFFFFFFFF), write(offset + 4, address >> 32)
            write(0x044, 1)
            self.rings[queue] = [area, area + 0x1000, area + 0x2000, 0, 0]
        write(0x070, self.device.status | mmio.STATUS_DRIVER_OK)
        self.next_desc = {vn.RECEIVE: 0, vn.TRANSMIT: 0}

    def write(self, offset, value):
        self.device.write(offset, 4, value)

    def offer(self, queue, buffers, writable):
        """A chain of ``(address, length)`` buffers; returns its head."""
        desc, avail, _, next_avail, _ = self.rings[queue]
        head = self.next_desc[queue]
        for i, (addr, length) in enumerate(buffers):
            index = (head + i) % SIZE
            more = i + 1 < len(buffers)
            self.ram.write(desc + 16 * index, struct.pack(
                "<QIHH", addr, length, (2 if writable else 0) | more, (index + 1) % SIZE))
        self.next_desc[queue] = (head + len(buffers)) % SIZE
        self.ram.write(avail + 4 + 2 * (next_avail % SIZE), struct.pack("<H", head))
        self.rings[queue][3] = next_avail + 1
        self.ram.write(avail + 2, struct.pack("<H", (next_avail + 1) & 0xFFFF))
        self.write(0x050, queue)
        return head

    def transmit(self, header: bytes, frame: bytes):
        data = BASE + 0x100000 + 0x20000 * (self.rings[vn.TRANSMIT][3] % 8)
        self.ram.write(data, header + frame)
        return self.offer(vn.TRANSMIT, [(data, len(header) + len(frame))], writable=False)

    def post_receive(self, count, size=BIG):
        for _ in range(count):
            addr = BASE + 0x200000 + size * (self.rings[vn.RECEIVE][3] % SIZE)
            self.offer(vn.RECEIVE, [(addr, size)], writable=True)

    def used_since(self, queue):
        _, _, used, _, seen = self.rings[queue]
        count = struct.unpack("<H", self.ram.read(used + 2, 2))[0]
        self.rings[queue][4] = count
        return [struct.unpack("<II", self.ram.read(used + 4 + 8 * (i % SIZE), 8))
                for i in range(seen, count)]

    def needs_reset(self) -> bool:
        return bool(self.device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET)


def header(flags=0, start=0, offset=0) -> bytes:
    return vn.HEADER.pack(flags, 0, 0, 0, start, offset, 0)


def ethernet(payload: bytes) -> bytes:
    return b"\xff" * 6 + MAC + b"\x08\x00" + payload


def reference_checksum(data: bytes) -> int:
    """RFC 1071, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_configuration_space_has_the_mac_link_state_and_mtu():
    driver = Driver(link=False)
    config = bytes(driver.device.read(0x100 + i, 1) for i in range(12))
    assert config[:6] == MAC
    assert struct.unpack("<HHH", config[6:]) == (0, 1, vn.MTU)      # link down
    generation = driver.device.read(0x0FC, 4)
    driver.net.connect(Link())
    assert driver.device.read(0x106, 2) & vn.S_LINK_UP
    assert driver.device.read(0x0FC, 4) != generation
    assert driver.device.read(0x060, 4) & mmio.INTERRUPT_CONFIG_CHANGE and driver.irqs[-1]


def test_a_frame_is_sent_as_it_is():
    driver = Driver()
    frame = ethernet(bytes(range(200)))
    head = driver.transmit(header(), frame)
    assert driver.link.frames == [frame]
    assert driver.used_since(vn.TRANSMIT) == [(head, 0)]


def test_checksum_offload_completes_the_checksum_where_the_header_says():
    driver = Driver()
    payload = os.urandom(1001)                      # an odd length
    start, offset = 34, 6                           # a UDP header after IPv4's, say
    seed = struct.pack(">H", 0x1234)                # the pseudo-header sum Linux leaves there
    frame = ethernet(bytes(20) + b"\x00\x35\x00\x35\x03\xf1" + seed + payload)
    driver.transmit(header(vn.HDR_F_NEEDS_CSUM, start, offset), frame)
    sent = driver.link.frames[0]
    # The device folds the bytes from csum_start, the seed in the field included.
    expected = reference_checksum(frame[start:])
    assert struct.unpack(">H", sent[start + offset:start + offset + 2])[0] == (expected or 0xFFFF)
    assert sent[:start + offset] == frame[:start + offset]
    assert sent[start + offset + 2:] == frame[start + offset + 2:]
    # What a receiver checks: the pseudo-header (whose sum was the seed) and
    # the range, the final checksum included, sum to zero.
    assert reference_checksum(seed + sent[start:]) == 0


def test_internet_checksum_matches_the_reference():
    for length in (0, 1, 2, 3, 1500, 65535):
        data = os.urandom(length)
        assert vn.internet_checksum(data) == (reference_checksum(data) or 0xFFFF)


@pytest.mark.parametrize("case", ["empty", "no_ethernet_header", "oversized", "csum_outside",
                                  "header_only_part"])
def test_hostile_frames_are_dropped_and_their_buffers_returned(case):
    driver = Driver()
    if case == "empty":
        head = driver.transmit(header(), b"")
    elif case == "no_ethernet_header":
        head = driver.transmit(header(), b"\x01" * 13)
    elif case == "oversized":
        head = driver.transmit(header(), ethernet(bytes(vn.MAX_FRAME)))
    elif case == "csum_outside":
        head = driver.transmit(header(vn.HDR_F_NEEDS_CSUM, 60, 0xFFF0), ethernet(bytes(50)))
    else:
        head = driver.transmit(b"\x01\x02\x03", b"")
    assert driver.used_since(vn.TRANSMIT) == [(head, 0)]
    assert driver.link.frames == []
    assert driver.net.counters["tx_dropped"] == 1
    assert not driver.needs_reset()
    frame = ethernet(b"after")                          # the device goes on
    driver.transmit(header(), frame)
    assert driver.link.frames == [frame]


def test_a_malformed_chain_makes_the_device_ask_for_a_reset():
    driver = Driver()
    desc, avail = driver.rings[vn.TRANSMIT][:2]
    driver.ram.write(desc, struct.pack("<QIHH", BASE + 0x100000, 64, 1, 1))
    driver.ram.write(desc + 16, struct.pack("<QIHH", BASE + 0x100000, 64, 1, 0))   # a loop
    driver.ram.write(avail + 4, struct.pack("<H", 0))
    driver.ram.write(avail + 2, struct.pack("<H", 1))
    driver.write(0x050, vn.TRANSMIT)
    assert driver.needs_reset() and driver.link.frames == []


def test_without_a_link_frames_are_dropped():
    driver = Driver(link=False)
    head = driver.transmit(header(), ethernet(b"nobody"))
    assert driver.used_since(vn.TRANSMIT) == [(head, 0)]
    assert driver.net.counters["tx_dropped"] == 1


def test_a_frame_waits_for_a_buffer_and_fills_one():
    driver = Driver()
    frame = ethernet(os.urandom(10_000))
    driver.net.receive(frame)
    driver.net.deliver()
    assert driver.used_since(vn.RECEIVE) == []              # no buffers yet: it waits
    driver.post_receive(2)
    used = driver.used_since(vn.RECEIVE)
    assert used == [(0, vn.HEADER.size + len(frame))]
    data = driver.ram.read(BASE + 0x200000, used[0][1])
    flags, _, _, _, _, _, buffers = vn.HEADER.unpack_from(data)
    assert flags == vn.HDR_F_DATA_VALID and buffers == 1
    assert data[vn.HEADER.size:] == frame
    assert driver.net.pending_bytes == 0


def test_a_frame_too_large_for_the_guests_buffer_is_dropped():
    driver = Driver(features=ALL & ~vn.F_GUEST_CSUM)
    driver.post_receive(2, size=2048)
    driver.net.receive(ethernet(bytes(3000)))
    small = ethernet(b"small")
    driver.net.receive(small)
    driver.net.deliver()
    used = driver.used_since(vn.RECEIVE)
    assert [length for _, length in used] == [0, vn.HEADER.size + len(small)]
    data = driver.ram.read(BASE + 0x200000 + 2048 * used[1][0], used[1][1])
    assert data[0] == 0 and data[vn.HEADER.size:] == small      # no DATA_VALID offered
    assert driver.net.counters["rx_dropped"] == 1


def test_waiting_frames_are_bounded():
    driver = Driver()
    frame = ethernet(bytes(60_000))
    for _ in range(2 * vn.MAX_PENDING // len(frame)):
        driver.net.receive(frame)
    assert driver.net.pending_bytes <= vn.MAX_PENDING
    assert driver.net.counters["rx_dropped"] > 0


def test_event_idx_asks_for_a_notification_when_the_buffers_run_out():
    driver = Driver(features=ALL | F_EVENT_IDX)
    driver.post_receive(1)
    for _ in range(2):
        driver.net.receive(ethernet(bytes(5000)))
    driver.net.deliver()
    assert len(driver.used_since(vn.RECEIVE)) == 1          # the second frame waits
    used = driver.rings[vn.RECEIVE][2]
    avail_event = struct.unpack("<H", driver.ram.read(used + 4 + 8 * SIZE, 2))[0]
    assert avail_event == 1                 # "tell me when you add the next buffer"
    driver.post_receive(1)
    assert len(driver.used_since(vn.RECEIVE)) == 1 and not driver.net.pending


def test_save_and_restore_keep_the_mac_and_refuse_a_bad_one():
    net = vn.VirtioNet(MAC)
    other = vn.VirtioNet(bytes.fromhex("525400000001"))
    other.restore(net.save())
    assert other.mac == MAC and other.link is None
    for bad in ({"mac": b"\x01" * 6}, {"mac": b"short"}, {"mac": 5}, {}):
        with pytest.raises(ValueError):
            other.restore(bad)


# --- the link to passt -------------------------------------------------------------------

class FakePasst:
    """What PasstLink needs of a Passt: its socket, and why it ended."""

    def __init__(self, sock):
        self.socket = sock

    def ended(self):
        return "passt ended (test)"


def make_link():
    ours, theirs = socket.socketpair()
    io = HostIO(output=lambda data: None)
    driver = Driver(link=False)
    ended = []
    link = PasstLink(FakePasst(ours), driver.net, io, ended.append)
    driver.net.connect(link)
    return driver, link, io, theirs, ended


def test_frames_from_passt_are_split_by_their_length_whatever_the_reads():
    driver, link, io, theirs, ended = make_link()
    frames = [ethernet(os.urandom(n)) for n in (50, 3000, 9000)]
    stream = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    driver.post_receive(8)
    for piece in (stream[:2], stream[2:70], stream[70:5000], stream[5000:]):
        theirs.sendall(piece)
        io.poll(timeout=1)
    pieces = [driver.ram.read(BASE + 0x200000 + BIG * head, length)[vn.HEADER.size:]
              for head, length in driver.used_since(vn.RECEIVE)]
    assert pieces == frames and ended == []


def test_frames_to_passt_carry_their_length():
    driver, link, io, theirs, ended = make_link()
    frame = ethernet(os.urandom(1000))
    driver.transmit(header(), frame)
    assert theirs.recv(65536) == struct.pack(">I", len(frame)) + frame


def test_an_oversized_frame_from_passt_closes_the_link():
    driver, link, io, theirs, ended = make_link()
    theirs.sendall(struct.pack(">I", vn.MAX_FRAME + 1) + bytes(16))
    io.poll(timeout=1)
    assert ended == ["passt ended (test)"] and link.closed


def test_passt_going_away_is_reported_once():
    driver, link, io, theirs, ended = make_link()
    theirs.close()
    io.poll(timeout=1)
    io.poll(timeout=0)
    assert ended == ["passt ended (test)"]


def test_a_passt_that_does_not_read_holds_the_guest_back_without_blocking():
    driver, link, io, theirs, ended = make_link()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = ethernet(bytes(60_000))
    sent = 0
    for _ in range(200):                 # far more than the socket and MAX_UNSENT hold
        driver.transmit(header(), frame)
        sent += 1
        if link.congested:
            break
    assert link.congested and len(link.unsent) >= MAX_UNSENT
    assert len(driver.used_since(vn.TRANSMIT)) == sent
    driver.transmit(header(), frame)     # not taken while congested: it waits in the ring
    assert driver.used_since(vn.TRANSMIT) == []
    received, expected = 0, (sent + 1) * (4 + len(frame))
    theirs.setblocking(False)
    for _ in range(10_000):
        try:
            received += len(theirs.recv(1 << 20))
        except BlockingIOError:
            pass
        io.poll(timeout=0.01)
        if received == expected:
            break
    assert driver.net.counters["tx_frames"] == sent + 1     # taken once passt read
    assert len(driver.used_since(vn.TRANSMIT)) == 1
    assert received == expected and ended == []
