"""The split virtqueue (virtio 1.2, section 2.7): descriptor table, available and used rings.

Everything here comes from the guest and is checked: every address and
length must lie in guest RAM, a chain may not be longer than the queue (so
a descriptor loop ends), indirect tables must be well formed. A malformed
chain raises ``BadChain``; the transport then marks the device as needing a
reset instead of failing the VMM.

With VIRTIO_F_EVENT_IDX negotiated (2.7.7.2 and 2.7.10) each side tells the
other which ring index it wants to hear about: the driver's ``used_event``
(after the available ring) says when it wants an interrupt, the device's
``avail_event`` (after the used ring) when it wants a notification. A
stream of buffers then costs neither an interrupt nor an exit per buffer
while the other side is busy anyway, as with QEMU's virtio.c.
"""

import struct
from dataclasses import dataclass, field

from ...memory import GuestMemoryError
from ..base import saved

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
MAX_QUEUE_SIZE = 1024
F_EVENT_IDX = 1 << 29        # VIRTIO_F_EVENT_IDX, a transport feature bit (virtio 1.2 section 6)


class BadChain(Exception):
    """A descriptor chain that breaks the rules of the spec."""


@dataclass
class Chain:
    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)   # (paddr, length)
    writable: list[tuple[int, int]] = field(default_factory=list)

    def read(self, ram, limit: int = 1 << 24) -> bytes:
        """The device-readable part of the chain, concatenated (at most ``limit`` bytes)."""
        if sum(length for _, length in self.readable) > limit:
            raise BadChain("request larger than the device accepts")
        if len(self.readable) == 1:          # the usual case: one copy out of RAM
            return ram.read(*self.readable[0])
        return b"".join(ram.read(paddr, length) for paddr, length in self.readable)

    def write(self, ram, data, start: int = 0) -> int:
        """Copy ``data`` (bytes or a memoryview) into the device-writable part,
        beginning ``start`` bytes into it; returns the bytes written."""
        view = memoryview(data)
        done = 0
        for paddr, length in self.writable:
            if start >= length:
                start -= length
                continue
            piece = view[done:done + length - start]
            if not piece:
                break
            ram.write(paddr + start, piece)
            done += len(piece)
            start = 0
        return done

    @property
    def writable_size(self) -> int:
        return sum(length for _, length in self.writable)


class VirtQueue:
    def __init__(self, ram):
        self.ram = ram
        self.event_idx = False       # VIRTIO_F_EVENT_IDX negotiated (set by the transport)
        self.reset()

    def reset(self) -> None:
        self.size = self.desc = self.avail = self.used = self.last_avail = 0
        self.ready = False
        # The used index at the last interrupt, -1 for none yet: the first used
        # buffer always interrupts (QEMU's signalled_used and signalled_used_valid).
        self.signalled_used = -1

    FIELDS = ("size", "desc", "avail", "used", "last_avail")

    def save(self) -> dict:
        return {"ready": self.ready, "signalled_used": self.signalled_used,
                **{name: getattr(self, name) for name in self.FIELDS}}

    def restore(self, state: dict) -> None:
        """Only the registers: the transport checks a ready queue's rings as
        when the driver makes it ready."""
        for name in self.FIELDS:
            setattr(self, name, saved(state, name, int, 1 << 64))
        self.last_avail &= 0xFFFF
        self.ready = saved(state, "ready", bool)
        self.signalled_used = -1 if state.get("signalled_used") == -1 else \
            saved(state, "signalled_used", int, 1 << 16)

    def _u16(self, paddr: int) -> int:
        return struct.unpack("<H", self.ram.read(paddr, 2))[0]

    def pending(self):
        """Chains the driver has made available since the last call."""
        while True:
            chain = self.next_chain()
            if chain is None:
                return
            yield chain

    def _avail_idx(self) -> int:
        try:
            avail_idx = self._u16(self.avail + 2)
        except GuestMemoryError:
            raise BadChain("available ring outside RAM") from None
        if (avail_idx - self.last_avail) & 0xFFFF > self.size:
            raise BadChain("available index ran ahead of the queue size")
        return avail_idx

    def next_chain(self):
        """The next available chain, or None when the driver has made none available."""
        avail_idx = self._avail_idx()
        if self.last_avail == avail_idx:
            return None
        head = self._u16(self.avail + 4 + 2 * (self.last_avail % self.size))
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if self.event_idx:
            # Notify me when you make the buffer after this one available
            # (QEMU's virtqueue_pop: vring_set_avail_event(vq, last_avail_idx)).
            self._set_u16(self.used + 4 + 8 * self.size, self.last_avail)
        return self._chain(head)

    def _descriptor(self, table: int, index: int, table_size: int):
        if index >= table_size:
            raise BadChain(f"descriptor index {index} outside a table of {table_size}")
        try:
            addr, length, flags, next_index = struct.unpack(
                "<QIHH", self.ram.read(table + 16 * index, 16))
        except GuestMemoryError:
            raise BadChain("descriptor table outside RAM") from None
        return addr, length, flags, next_index

    def _chain(self, head: int) -> Chain:
        chain = Chain(head)
        table, table_size, index = self.desc, self.size, head
        indirect_seen = False
        for _ in range(MAX_QUEUE_SIZE + 1):
            addr, length, flags, next_index = self._descriptor(table, index, table_size)
            if flags & DESC_F_INDIRECT:
                if indirect_seen or table != self.desc or length % 16 or length == 0:
                    raise BadChain("bad indirect descriptor")
                if not self.ram.contains(addr, length):
                    raise BadChain("indirect table outside RAM")
                indirect_seen = True
                table, table_size, index = addr, length // 16, 0
                continue
            if not self.ram.contains(addr, length):
                raise BadChain(f"buffer {addr:#x}+{length} outside RAM")
            if flags & DESC_F_WRITE:
                chain.writable.append((addr, length))
            elif chain.writable:
                raise BadChain("a readable buffer after a writable one")
            else:
                chain.readable.append((addr, length))
            if not flags & DESC_F_NEXT:
                return chain
            index = next_index
        raise BadChain("descriptor chain loops")

    def put_used(self, head: int, written: int) -> None:
        """Return a chain to the driver (used ring entry, then the index)."""
        index = self._u16(self.used + 2)
        slot = self.used + 4 + 8 * (index % self.size)
        self.ram.write(slot, struct.pack("<II", head, written))
        self._set_u16(self.used + 2, index + 1)

    def needs_interrupt(self) -> bool:
        """After buffers were used: must the driver be interrupted? Without
        EVENT_IDX always; with it only when the used index has passed the
        driver's ``used_event`` since the last interrupt (2.7.7.2; QEMU's
        virtio_split_should_notify and vring_need_event)."""
        if not self.event_idx:
            return True
        new = self._u16(self.used + 2)
        old, self.signalled_used = self.signalled_used, new
        if old < 0:
            return True
        event = self._u16(self.avail + 4 + 2 * self.size)
        return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF

    def _set_u16(self, paddr: int, value: int) -> None:
        self.ram.write(paddr, struct.pack("<H", value & 0xFFFF))
