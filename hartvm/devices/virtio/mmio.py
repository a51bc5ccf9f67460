"""The virtio MMIO transport, version 2 ("modern"), virtio 1.2 section 4.2.2.

One class serves every device: a backend supplies its device id, feature
bits, configuration space and what to do with the chains of each queue.
Guest mistakes never reach the VMM: a malformed descriptor chain or a
queue placed outside RAM sets DEVICE_NEEDS_RESET in the status register and
the device stops using its queues until the driver resets it (2.1.2).
A free slot holds an ``EmptySlot``, which answers as QEMU's transport with
no backend does.
"""

import logging

from ...memory import GuestMemoryError
from ..base import Device, saved
from .queue import F_EVENT_IDX, MAX_QUEUE_SIZE, BadChain, VirtQueue

log = logging.getLogger("hartvm.virtio")

MAGIC = 0x74726976          # "virt"
TRANSPORT_VERSION = 2       # the modern (non-legacy) transport
QEMU_VENDOR_ID = 0x554D4551  # "QEMU", as QEMU's devices report it
F_VERSION_1 = 1 << 32

STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 64
STATUS_FAILED = 128
INTERRUPT_USED_BUFFER = 1
INTERRUPT_CONFIG_CHANGE = 2

# Register offsets: the table "MMIO Device Register Layout" of virtio 1.2
# section 4.2.2, names as there (MagicValue is MAGIC_VALUE, and so on).
MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100              # the device-specific configuration space starts here

# The ring address registers: the VirtQueue attribute each sets, and which half.
RING_ADDRESSES = {
    QUEUE_DESC_LOW: ("desc", False), QUEUE_DESC_HIGH: ("desc", True),
    QUEUE_DRIVER_LOW: ("avail", False), QUEUE_DRIVER_HIGH: ("avail", True),
    QUEUE_DEVICE_LOW: ("used", False), QUEUE_DEVICE_HIGH: ("used", True),
}


class Backend:
    """What a device type provides. Subclasses set these and override ``process``."""
    device_id = 0
    features = 0
    queue_sizes: tuple[int, ...] = ()
    transport = None            # the VirtioMMIO that serves this backend, once attached

    def config(self) -> bytes:
        return b""

    def process(self, queue_index: int, queue: VirtQueue, ram) -> bool:
        """Handle the available chains of a queue; True if any was used."""
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def save(self) -> dict:
        """Device-specific state for a snapshot (see Device.save)."""
        return {}

    def restore(self, state: dict) -> None:
        """Load ``save()``'s output; raise ValueError if it is invalid."""

    def close(self) -> None:
        """Release host resources (files) when the machine goes away."""


class EmptySlot(Device):
    """A transport with no device behind it, as each free slot of QEMU's virt
    board is: a driver scanning the slots reads the magic value, the version
    and the vendor, and DeviceID 0 ("no device"), not an access fault.
    Everything else reads as zero and writes are ignored, whatever the size
    (QEMU hw/virtio/virtio-mmio.c: virtio_mmio_read and virtio_mmio_write
    when ``virtio_bus_get_device`` finds no backend)."""
    access_sizes = frozenset({1, 2, 4})

    def read(self, offset, size):
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return TRANSPORT_VERSION
        if offset == VENDOR_ID:
            return QEMU_VENDOR_ID
        return 0

    def write(self, offset, size, value):
        pass


class VirtioMMIO(Device):
    access_sizes = frozenset({1, 2, 4})
    SAVE_VERSION = 2      # 2: each queue's signalled_used (event suppression)

    def __init__(self, ram, backend: Backend, set_irq=None):
        super().__init__()
        self.ram = ram
        self.backend = backend
        backend.transport = self
        self._set_irq = set_irq
        self.queues = [VirtQueue(ram) for _ in backend.queue_sizes]
        self._reset_state()

    def reset(self) -> None:
        self._reset_state()
        self.backend.reset()

    def _reset_state(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.config_generation = 0
        for queue in self.queues:
            queue.reset()
        self._set_ring_features()
        self._update_irq()

    def _set_ring_features(self) -> None:
        """The queues follow the ring features the driver accepted (FEATURES_OK)."""
        event_idx = bool(self.status & STATUS_FEATURES_OK and self.driver_features & F_EVENT_IDX)
        for queue in self.queues:
            queue.event_idx = event_idx

    @property
    def device_features(self) -> int:
        return self.backend.features | F_VERSION_1

    def _queue(self):
        if self.queue_sel < len(self.queues):
            return self.queues[self.queue_sel]
        return None

    # --- registers ------------------------------------------------------------
    def read(self, offset, size):
        if offset >= CONFIG:
            config = self.backend.config()
            start = offset - CONFIG
            return int.from_bytes(config[start:start + size].ljust(size, b"\0"), "little")
        if size != 4:
            return self.unknown("read", offset)
        queue = self._queue()
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return TRANSPORT_VERSION
        if offset == DEVICE_ID:
            return self.backend.device_id
        if offset == VENDOR_ID:
            return QEMU_VENDOR_ID
        if offset == DEVICE_FEATURES:
            return (self.device_features >> (32 * self.device_features_sel)) & 0xFFFFFFFF \
                if self.device_features_sel < 2 else 0
        if offset == QUEUE_NUM_MAX:
            return self.backend.queue_sizes[self.queue_sel] if queue else 0
        if offset == QUEUE_READY:
            return int(queue.ready) if queue else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset == CONFIG_GENERATION:
            return self.config_generation
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        if offset >= CONFIG:
            return  # no device here has writable configuration
        if size != 4:
            self.unknown("write", offset)
            return
        queue = self._queue()
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.driver_features_sel < 2:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) \
                    | (value << shift)
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NOTIFY:
            self._notify(value)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self._update_irq()
        elif offset == STATUS:
            self._write_status(value)
        elif queue is not None and not queue.ready and (
                offset == QUEUE_NUM or offset in RING_ADDRESSES):
            self._queue_setup(queue, offset, value)
        elif offset == QUEUE_READY and queue is not None:
            self._queue_ready(queue, value & 1)
        else:
            self.unknown("write", offset)

    # --- snapshots ---------------------------------------------------------------
    REGISTERS_SAVED = ("status", "device_features_sel", "driver_features_sel",
                       "driver_features", "queue_sel", "interrupt_status", "config_generation")

    def fdt_node(self, tree, region) -> None:
        tree.device("virtio_mmio", region, "virtio,mmio")

    def save(self) -> dict:
        return {"device_id": self.backend.device_id,
                **{name: getattr(self, name) for name in self.REGISTERS_SAVED},
                "queues": [queue.save() for queue in self.queues],
                "backend": self.backend.save()}

    def restore(self, state: dict) -> None:
        device_id = saved(state, "device_id", int)
        if device_id != self.backend.device_id:
            raise ValueError(f"device id {device_id}, but this slot holds device "
                             f"{self.backend.device_id}")
        queues = saved(state, "queues", list)
        if len(queues) != len(self.queues):
            raise ValueError(f"{len(queues)} queues, expected {len(self.queues)}")
        for name in self.REGISTERS_SAVED:
            setattr(self, name, saved(state, name, int, 1 << 64))
        for index, (queue, queue_state) in enumerate(zip(self.queues, queues)):
            queue.restore(queue_state)
            if queue.ready and not self._rings_valid(queue, index):
                raise ValueError(f"queue {index}: bad size or rings outside RAM")
        self.backend.restore(saved(state, "backend", dict))
        self._set_ring_features()
        # No signal: the PLIC's saved state holds what the line raised, and a
        # raise now would make a request of it again (plic.py).

    def _rings_valid(self, queue, index: int) -> bool:
        size = queue.size
        maximum = self.backend.queue_sizes[index]
        return 0 < size <= min(maximum, MAX_QUEUE_SIZE) and size & (size - 1) == 0 \
            and self.ram.contains(queue.desc, 16 * size) \
            and self.ram.contains(queue.avail, 6 + 2 * size) \
            and self.ram.contains(queue.used, 6 + 8 * size)

    def _queue_setup(self, queue, offset, value):
        if offset == QUEUE_NUM:
            queue.size = value
            return
        name, high = RING_ADDRESSES[offset]
        old = getattr(queue, name)
        if high:
            setattr(queue, name, (old & 0xFFFFFFFF) | (value << 32))
        else:
            setattr(queue, name, (old & ~0xFFFFFFFF) | value)

    def _queue_ready(self, queue, ready):
        if not ready:
            queue.ready = False
            return
        if self._rings_valid(queue, self.queue_sel):
            queue.ready = True
        else:
            self._needs_reset(f"queue {self.queue_sel}: bad size {queue.size} or rings "
                              f"outside RAM")

    def _write_status(self, value):
        if value == 0:
            self._reset_state()
            self.backend.reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            # The spec lets a device refuse FEATURES_OK to a driver that asks
            # for features it did not offer or leaves out VERSION_1 (3.1.1,
            # 6.1). QEMU refuses neither, and we follow it: the STATUS write
            # of virtio_mmio_write (hw/virtio/virtio-mmio.c) calls
            # virtio_set_features, whose virtio_set_features_nocheck
            # (hw/virtio/virtio.c) drops the bits not offered and whose
            # failure is ignored; virtio_set_status validates features only
            # once VERSION_1 was negotiated, and none of hartvm's devices has
            # a validate_features that could fail. So a driver that writes
            # feature word 0 alone, as one written for legacy virtio does,
            # gets FEATURES_OK and can use its device.
            self.driver_features &= self.device_features
        self.status = value | (self.status & STATUS_NEEDS_RESET)
        self._set_ring_features()

    def kick(self, index: int) -> None:
        """Process a queue on the host's initiative (new host data for the guest)."""
        self._notify(index)

    def _notify(self, index):
        if index >= len(self.queues) or not self.status & STATUS_DRIVER_OK:
            return
        queue = self.queues[index]
        if not queue.ready or self.status & STATUS_NEEDS_RESET:
            return
        try:
            used = self.backend.process(index, queue, self.ram)
        except (BadChain, GuestMemoryError) as error:
            self._needs_reset(f"queue {index}: {error}")
            return
        if used and queue.needs_interrupt():
            self.interrupt_status |= INTERRUPT_USED_BUFFER
            self._update_irq()

    def config_changed(self) -> None:
        """The device changed its configuration space on the host's initiative
        (e.g. a network link going up): a new generation and an interrupt (4.2.2)."""
        self.config_generation = (self.config_generation + 1) & 0xFFFFFFFF
        if self.status & STATUS_DRIVER_OK:
            self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
            self._update_irq()

    def _needs_reset(self, why: str) -> None:
        log.warning("virtio %s: %s; the device needs a reset",
                    type(self.backend).__name__, why)
        self.status |= STATUS_NEEDS_RESET
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
        self._update_irq()

    def _update_irq(self):
        """QEMU's virtio_mmio_update_irq: the line follows InterruptStatus, and is
        signalled on each notification (a used buffer, a configuration change),
        each InterruptACK write and each reset, not only when it changes. The
        PLIC latches every raise as a request (plic.py)."""
        if self._set_irq is not None:
            self._set_irq(bool(self.interrupt_status))
