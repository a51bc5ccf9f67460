"""virtio-net, the network card (virtio 1.2 section 5.1): a receive and a transmit queue.

The device moves Ethernet frames between the guest and a ``link`` (the
VMM's connection to its network back end, vmm/network.py) and never looks
inside them: the only bytes of a frame it touches are the ones a
transmitted frame's header points it at for checksum offload.

Features, each chosen to cut the guest's work per byte without the device
parsing packets:

- VIRTIO_NET_F_MTU (65520, what passt offers and assigns by DHCP): a TCP
  segment of up to 64 KiB travels as one frame, so the guest handles a
  fortieth of the frames, interrupts and headers that a 1500-byte MTU costs,
  which is most of what segmentation offload would save, with no segmenting
  in the VMM (5.1.4.1);
- VIRTIO_NET_F_CSUM: the guest leaves TCP and UDP checksums to the device,
  which folds the bytes from ``csum_start`` and stores the result at
  ``csum_start + csum_offset`` (5.1.6.2);
- VIRTIO_NET_F_GUEST_CSUM: received frames are marked DATA_VALID, so the
  guest does not verify their checksums (the back end wrote them);
- VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS: the VM's address, and the link
  state, down while no back end is connected (a restored VM, a passt that
  died) and up once one is, announced by a configuration change (5.1.4);
- VIRTIO_F_EVENT_IDX (queue.py).

VIRTIO_NET_F_MRG_RXBUF is not offered, on purpose: with it Linux posts
receive buffers of at most a page, so a 64 KiB frame costs sixteen chains;
without it, and with the large MTU, Linux posts "big packet" buffers, each
one chain of pages that holds a whole frame (drivers/net/virtio_net.c,
add_recvbuf_big): a download runs about 35% faster here.

The guest is hostile: a frame shorter than an Ethernet header, longer than
the largest the MTU allows, or with a checksum offset outside it is
dropped (and counted) and its buffer returned; a malformed chain makes the
transport ask for a reset. Frames for the guest wait (``MAX_PENDING`` bytes
at most) until it posts buffers; the VMM reads no more from the back end
while they do.
"""

import struct
from collections import deque

import numpy as np

from ..base import saved
from .mmio import Backend
from .queue import F_EVENT_IDX

DEVICE_ID = 1
QUEUE_SIZE = 256
RECEIVE, TRANSMIT = 0, 1

F_CSUM = 1 << 0
F_GUEST_CSUM = 1 << 1
F_MTU = 1 << 3
F_MAC = 1 << 5
F_STATUS = 1 << 16

# struct virtio_net_hdr (5.1.6): flags, gso_type, hdr_len, gso_size,
# csum_start, csum_offset, num_buffers (always there with VERSION_1).
HEADER = struct.Struct("<BBHHHHH")
HDR_F_NEEDS_CSUM = 1
HDR_F_DATA_VALID = 2
S_LINK_UP = 1

MTU = 65520
ETHERNET_HEADER = 14
MAX_FRAME = 65535          # what passt (and the stream framing's peers) take at most
MAX_PENDING = 4 << 20      # bytes of received frames waiting for guest buffers
MAC_LENGTH = 6


def internet_checksum(data) -> int:
    """The complemented 16-bit one's complement sum of ``data`` (RFC 1071).
    A result of 0 is given as 0xFFFF: the same value in one's complement,
    and the one UDP needs (0 there means no checksum, RFC 768)."""
    view = memoryview(data)
    total = int(np.frombuffer(view[:len(view) & ~1], ">u2").sum(dtype=np.uint64))
    if len(view) & 1:
        total += view[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF


class VirtioNet(Backend):
    """``link``: where transmitted frames go, ``send(frames) -> None``, with
    ``congested`` true while it cannot take more (the transmit queue then
    waits until the link kicks it); None while no back end is connected."""
    device_id = DEVICE_ID
    features = F_CSUM | F_GUEST_CSUM | F_MTU | F_MAC | F_STATUS | F_EVENT_IDX
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, mac: bytes):
        self.mac = self._check_mac(mac)
        self.link = None
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.counters = dict.fromkeys(
            ("rx_frames", "rx_dropped", "tx_frames", "tx_dropped"), 0)

    @staticmethod
    def _check_mac(mac) -> bytes:
        if not isinstance(mac, bytes) or len(mac) != MAC_LENGTH or mac[0] & 1:
            raise ValueError(f"bad MAC address {mac!r}: six bytes, not a multicast one")
        return mac

    def config(self) -> bytes:
        status = S_LINK_UP if self.link is not None else 0
        # mac, status, max_virtqueue_pairs (1: no multiqueue), mtu (5.1.4).
        return self.mac + struct.pack("<HHH", status, 1, MTU)

    # --- the host side ---------------------------------------------------------------
    def connect(self, link, mac: bytes | None = None) -> None:
        """Plug in a back end (``link``, or None to unplug) and, for a clone, a new
        address; the guest hears of the link change through a configuration
        change interrupt."""
        if mac is not None:
            self.mac = self._check_mac(mac)
        self.link = link
        if link is None:
            self._drop_pending()
        if self.transport is not None:
            self.transport.config_changed()

    def receive(self, frame: bytes) -> None:
        """A frame for the guest, delivered as soon as it has buffers for it."""
        if self.pending_bytes + len(frame) > MAX_PENDING or not \
                ETHERNET_HEADER <= len(frame) <= MAX_FRAME:
            self.counters["rx_dropped"] += 1
            return
        self.pending.append(frame)
        self.pending_bytes += len(frame)

    def deliver(self) -> None:
        """Offer the waiting frames to the guest (after ``receive``)."""
        if self.pending and self.transport is not None:
            self.transport.kick(RECEIVE)

    def _drop_pending(self) -> None:
        self.counters["rx_dropped"] += len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0

    # --- the queues ---------------------------------------------------------------------
    def _negotiated(self, feature: int) -> bool:
        return bool(self.transport.driver_features & feature)

    def process(self, queue_index, queue, ram) -> bool:
        if queue_index == RECEIVE:
            return self._fill_receive_buffers(queue, ram)
        return self._transmit(queue, ram)

    def _fill_receive_buffers(self, queue, ram) -> bool:
        """Each waiting frame into a buffer of its own, until the guest has none
        left (with EVENT_IDX, taking the last one asked for a notification)."""
        flags = HDR_F_DATA_VALID if self._negotiated(F_GUEST_CSUM) else 0
        header = HEADER.pack(flags, 0, 0, 0, 0, 0, 1)
        used = False
        while self.pending:
            chain = queue.next_chain()
            if chain is None:
                break
            frame = self.pending.popleft()
            self.pending_bytes -= len(frame)
            used = True
            if chain.writable_size < HEADER.size + len(frame):
                queue.put_used(chain.head, 0)      # the guest's buffer is too small
                self.counters["rx_dropped"] += 1
                continue
            queue.put_used(chain.head, chain.write(ram, header + frame))
            self.counters["rx_frames"] += 1
        return used

    def _transmit(self, queue, ram) -> bool:
        frames = []
        used = False
        while self.link is None or not self.link.congested:
            chain = queue.next_chain()
            if chain is None:
                break
            frame = self._outgoing(chain, ram)
            queue.put_used(chain.head, 0)
            used = True
            if frame is None or self.link is None:
                self.counters["tx_dropped"] += 1
            else:
                frames.append(frame)
                self.counters["tx_frames"] += 1
                if len(frames) >= QUEUE_SIZE:
                    self.link.send(frames)
                    frames = []
        if frames:
            self.link.send(frames)
        return used

    @staticmethod
    def _outgoing(chain, ram):
        """The frame of a transmit chain, its checksum completed; None to drop it."""
        size = sum(length for _, length in chain.readable)
        if not HEADER.size + ETHERNET_HEADER <= size <= HEADER.size + MAX_FRAME:
            return None
        data = chain.read(ram)
        flags, _, _, _, start, offset, _ = HEADER.unpack_from(data)
        frame = data[HEADER.size:]
        if not flags & HDR_F_NEEDS_CSUM:
            return frame
        if start + offset + 2 > len(frame):
            return None
        frame = bytearray(frame)
        # The field holds the pseudo-header's sum; the fold covers it (5.1.6.2).
        frame[start + offset:start + offset + 2] = \
            internet_checksum(frame[start:]).to_bytes(2, "big")
        return bytes(frame)

    # --- life cycle ---------------------------------------------------------------------
    def reset(self) -> None:
        self._drop_pending()

    def save(self) -> dict:
        """The address only: frames in flight and the back end do not survive a
        snapshot (a restored VM's link is down until one is connected)."""
        return {"mac": self.mac}

    def restore(self, state: dict) -> None:
        self.mac = self._check_mac(saved(state, "mac", bytes))
        self.link = None
        self._drop_pending()
