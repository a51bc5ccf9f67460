"""The virtio MMIO transport, version 2 ("modern"), virtio 1.2 section 4.2.2.

One class serves every device: a backend supplies its device id, feature
bits, configuration space and what to do with the chains of each queue.
Guest mistakes never reach the VMM: a malformed descriptor chain or a
queue placed outside RAM sets DEVICE_NEEDS_RESET in the status register and
the device stops using its queues until the driver resets it (2.1.2).
"""

import logging

from ...memory import GuestMemoryError
from ..base import Device, saved
from .queue import MAX_QUEUE_SIZE, BadChain, VirtQueue

log = logging.getLogger("hartvm.virtio")

MAGIC = 0x74726976          # "virt"
VERSION = 2
VENDOR_ID = 0x554D4551      # "QEMU", as QEMU's devices report it
F_VERSION_1 = 1 << 32

STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 64
STATUS_FAILED = 128
INTERRUPT_USED_BUFFER = 1
INTERRUPT_CONFIG_CHANGE = 2

REGISTERS = {
    0x000: "MagicValue", 0x004: "Version", 0x008: "DeviceID", 0x00C: "VendorID",
    0x010: "DeviceFeatures", 0x014: "DeviceFeaturesSel", 0x020: "DriverFeatures",
    0x024: "DriverFeaturesSel", 0x030: "QueueSel", 0x034: "QueueNumMax", 0x038: "QueueNum",
    0x044: "QueueReady", 0x050: "QueueNotify", 0x060: "InterruptStatus",
    0x064: "InterruptACK", 0x070: "Status", 0x080: "QueueDescLow", 0x084: "QueueDescHigh",
    0x090: "QueueDriverLow", 0x094: "QueueDriverHigh", 0x0A0: "QueueDeviceLow",
    0x0A4: "QueueDeviceHigh", 0x0FC: "ConfigGeneration",
}
CONFIG = 0x100


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


class VirtioMMIO(Device):
    access_sizes = frozenset({1, 2, 4})

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
        self._update_irq()

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
        if offset == 0x000:
            return MAGIC
        if offset == 0x004:
            return VERSION
        if offset == 0x008:
            return self.backend.device_id
        if offset == 0x00C:
            return VENDOR_ID
        if offset == 0x010:
            return (self.device_features >> (32 * self.device_features_sel)) & 0xFFFFFFFF \
                if self.device_features_sel < 2 else 0
        if offset == 0x034:
            return self.backend.queue_sizes[self.queue_sel] if queue else 0
        if offset == 0x044:
            return int(queue.ready) if queue else 0
        if offset == 0x060:
            return self.interrupt_status
        if offset == 0x070:
            return self.status
        if offset == 0x0FC:
            return self.config_generation
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        if offset >= CONFIG:
            return  # no device here has writable configuration
        if size != 4:
            self.unknown("write", offset)
            return
        queue = self._queue()
        if offset == 0x014:
            self.device_features_sel = value
        elif offset == 0x020:
            if self.driver_features_sel < 2:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) \
                    | (value << shift)
        elif offset == 0x024:
            self.driver_features_sel = value
        elif offset == 0x030:
            self.queue_sel = value
        elif offset == 0x050:
            self._notify(value)
        elif offset == 0x064:
            self.interrupt_status &= ~value
            self._update_irq()
        elif offset == 0x070:
            self._write_status(value)
        elif queue is not None and not queue.ready and offset in (
                0x038, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4):
            self._queue_setup(queue, offset, value)
        elif offset == 0x044 and queue is not None:
            self._queue_ready(queue, value & 1)
        else:
            self.unknown("write", offset)

    # --- snapshots ---------------------------------------------------------------
    REGISTERS_SAVED = ("status", "device_features_sel", "driver_features_sel",
                       "driver_features", "queue_sel", "interrupt_status", "config_generation")

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
        self._update_irq()

    def _rings_valid(self, queue, index: int) -> bool:
        size = queue.size
        maximum = self.backend.queue_sizes[index]
        return 0 < size <= min(maximum, MAX_QUEUE_SIZE) and size & (size - 1) == 0 \
            and self.ram.contains(queue.desc, 16 * size) \
            and self.ram.contains(queue.avail, 6 + 2 * size) \
            and self.ram.contains(queue.used, 6 + 8 * size)

    def _queue_setup(self, queue, offset, value):
        if offset == 0x038:
            queue.size = value
            return
        name = {0x080: "desc", 0x090: "avail", 0x0A0: "used"}[offset & ~4]
        old = getattr(queue, name)
        if offset & 4:
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
            # Only offered features, and VERSION_1, may be accepted (3.1.1).
            if self.driver_features & ~self.device_features or \
                    not self.driver_features & F_VERSION_1:
                value &= ~STATUS_FEATURES_OK
        self.status = value | (self.status & STATUS_NEEDS_RESET)

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
        if used:
            self.interrupt_status |= INTERRUPT_USED_BUFFER
            self._update_irq()

    def _needs_reset(self, why: str) -> None:
        log.warning("virtio %s: %s; the device needs a reset",
                    type(self.backend).__name__, why)
        self.status |= STATUS_NEEDS_RESET
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
        self._update_irq()

    def _update_irq(self):
        if self._set_irq is not None:
            self._set_irq(bool(self.interrupt_status))
