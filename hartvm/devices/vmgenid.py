"""The Virtual Machine Generation ID: tells the guest it was restored or forked.

Microsoft's "Virtual Machine Generation ID" specification: a 128-bit
identifier that the hypervisor changes whenever the guest may be running
again from the same state (a restored snapshot, a fork), followed by a
notification. Linux's drivers/virt/vmgenid.c binds to the devicetree node
``compatible = "microsoft,vmgenid"`` (Documentation/devicetree/bindings/rng/
microsoft,vmgenid.yaml, Linux 6.10+): ``reg`` is the 16-byte ID, which the
driver ioremaps and copies, and ``interrupts`` the notification. On the
interrupt it copies the ID again and, if it changed, reseeds the kernel's
random generator (add_vmfork_randomness: "crng reseeded due to virtual
machine fork"), so two forks never hand out the same random numbers.

The ID is read-only at offsets 0..15, little-endian as bytes lie in memory;
writes are ignored. There is no acknowledge register, so the notification
is an edge (``pulse_irq()``), not a level.
"""

from .base import Device

ID_SIZE = 16


def _checked_id(value) -> bytes:
    if isinstance(value, (bytes, bytearray)) and len(value) == ID_SIZE:
        return bytes(value)
    got = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
    raise ValueError(f"VM generation ID must be {ID_SIZE} bytes, got {got}")


class VMGenID(Device):
    def __init__(self, pulse_irq=None, generation_id: bytes = bytes(ID_SIZE)):
        super().__init__()
        self._pulse_irq = pulse_irq or (lambda: None)   # () -> None: one interrupt edge
        self.generation_id = _checked_id(generation_id)

    def new_generation(self, generation_id: bytes) -> None:
        """Change the ID and notify the guest (call with the guest stopped or running)."""
        self.generation_id = _checked_id(generation_id)
        self._pulse_irq()

    def read(self, offset, size):
        if offset >= ID_SIZE:
            return self.unknown("read", offset)
        # An access that runs past the ID reads zeros for the bytes beyond it.
        return int.from_bytes(self.generation_id[offset:offset + size], "little")

    def write(self, offset, size, value):
        pass  # read-only: the guest cannot change its generation

    def fdt_node(self, tree, region) -> None:
        tree.device("vmgenid", region, "microsoft,vmgenid")

    # --- snapshots ----------------------------------------------------------
    def save(self) -> dict:
        return {"generation_id": self.generation_id}

    def restore(self, state: dict) -> None:
        # No interrupt: the restored guest already knows this ID. Whoever forks
        # or restores calls new_generation() afterwards.
        self.generation_id = _checked_id(state.get("generation_id") if isinstance(state, dict)
                                         else None)
