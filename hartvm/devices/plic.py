"""The platform-level interrupt controller (SiFive PLIC, as on QEMU's virt board).

Register map (RISC-V PLIC specification 1.0.0, chapter 3): source
priorities at 4*source, pending bits at 0x1000, per-context enable bits at
0x2000 + 0x80*context, per-context threshold at 0x200000 + 0x1000*context
and claim/complete at the threshold + 4. Context 2*N is hart N's M-mode,
2*N+1 its S-mode, as QEMU's virt board numbers them.

Sources are level-triggered: ``set_irq(source, level)``. A source is pending
while its line is high and it is not being served (claimed and not yet
completed, the "gateway" of chapter 4). A device without an acknowledge
register signals an edge instead: ``pulse(source)`` makes the source pending
until it is claimed. An edge that comes while the source is being served is
remembered and pends it again at completion (the chapter allows a gateway
to count such edges; one is enough, as the handler reads the device's state
afresh). Each context's output drives the hart's MEIP bit (M contexts) or
SEIP line (S contexts).
"""

from ..cpu.layout import CSR, IRQ_MEI, IRQ_SEI, MIP, MIP_MEIP, SEIP_LINE
from .base import Device, saved

SOURCES = 96              # source 0 does not exist; QEMU virt has 95 (riscv,ndev)
PRIORITY_MASK = 7
PENDING = 0x1000
ENABLE = 0x2000
ENABLE_STRIDE = 0x80
CONTEXT = 0x200000
CONTEXT_STRIDE = 0x1000


class PLIC(Device):
    access_sizes = frozenset({4})

    def __init__(self, harts):
        super().__init__()
        self.harts = harts                 # hart state arrays, by hart id
        self.reset()

    def reset(self) -> None:
        self.priority = [0] * SOURCES
        self.level = [False] * SOURCES
        self.pending = [False] * SOURCES
        self.in_service = [False] * SOURCES
        self.deferred_edge = [False] * SOURCES   # an edge came while in service
        self.enable = {}                   # context -> bitmask of enabled sources
        self.threshold = {}                # context -> threshold
        self._update()

    @property
    def contexts(self) -> int:
        return 2 * len(self.harts)

    # --- interrupt lines ----------------------------------------------------
    def set_irq(self, source: int, level: bool) -> None:
        if not 0 < source < SOURCES:
            return
        self.level[source] = level
        if level and not self.in_service[source]:
            self.pending[source] = True
        elif not level:
            self.pending[source] = False
        self._update()

    def pulse(self, source: int) -> None:
        """An edge-triggered request: pending until claimed, with no level behind it."""
        if not 0 < source < SOURCES:
            return
        if self.in_service[source]:
            self.deferred_edge[source] = True
        else:
            self.pending[source] = True
        self._update()

    def _best(self, context: int) -> int:
        """The pending, enabled source of highest priority above the threshold, or 0."""
        enabled = self.enable.get(context, 0)
        best, best_priority = 0, self.threshold.get(context, 0)
        for source in range(1, SOURCES):
            if self.pending[source] and enabled >> source & 1 and self.priority[source] > best_priority:
                best, best_priority = source, self.priority[source]
        return best

    def _update(self) -> None:
        for hart, state in enumerate(self.harts):
            if self._best(2 * hart):
                state[CSR + MIP] |= MIP_MEIP
            else:
                state[CSR + MIP] &= ~MIP_MEIP
            state[SEIP_LINE] = 1 if self._best(2 * hart + 1) else 0

    # --- registers ----------------------------------------------------------
    def read(self, offset, size):
        if offset < PENDING:
            source = offset // 4
            return self.priority[source] if source < SOURCES else 0
        if offset < ENABLE:
            word = (offset - PENDING) // 4
            return sum(1 << i for i in range(32)
                       if 32 * word + i < SOURCES and self.pending[32 * word + i])
        if offset < CONTEXT:
            context, within = divmod(offset - ENABLE, ENABLE_STRIDE)
            if context < self.contexts:
                return (self.enable.get(context, 0) >> (8 * within)) & 0xFFFFFFFF
            return self.unknown("read", offset)
        context, register = divmod(offset - CONTEXT, CONTEXT_STRIDE)
        if context >= self.contexts:
            return self.unknown("read", offset)
        if register == 0:
            return self.threshold.get(context, 0)
        if register == 4:
            return self._claim(context)
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        if offset < PENDING:
            source = offset // 4
            if 0 < source < SOURCES:
                self.priority[source] = value & PRIORITY_MASK
        elif offset < ENABLE:
            pass  # pending bits are read-only
        elif offset < CONTEXT:
            context, within = divmod(offset - ENABLE, ENABLE_STRIDE)
            if context >= self.contexts or within >= (SOURCES + 31) // 32 * 4:
                self.unknown("write", offset)
                return
            shift = 8 * within
            mask = ((1 << SOURCES) - 2)   # source 0 cannot be enabled
            current = self.enable.get(context, 0) & ~(0xFFFFFFFF << shift)
            self.enable[context] = (current | (value << shift)) & mask
        else:
            context, register = divmod(offset - CONTEXT, CONTEXT_STRIDE)
            if context >= self.contexts:
                self.unknown("write", offset)
                return
            if register == 0:
                self.threshold[context] = value & PRIORITY_MASK
            elif register == 4:
                self._complete(context, value)
            else:
                self.unknown("write", offset)
                return
        self._update()

    def _claim(self, context: int) -> int:
        source = self._best(context)
        if source:
            self.pending[source] = False
            self.in_service[source] = True
            self._update()
        return source

    def _complete(self, context: int, source: int) -> None:
        # A completion for a source that is not enabled for this context is ignored (7.x).
        if 0 < source < SOURCES and self.enable.get(context, 0) >> source & 1:
            self.in_service[source] = False
            if self.level[source] or self.deferred_edge[source]:
                self.pending[source] = True
            self.deferred_edge[source] = False

    # --- snapshots ----------------------------------------------------------
    def fdt_node(self, tree, region) -> None:
        """Each hart's M-mode and S-mode external interrupts, in context order."""
        node = tree.device("plic", region, ("sifive,plic-1.0.0", "riscv,plic0"))
        node.set("phandle", tree.plic_phandle).set("riscv,ndev", SOURCES - 1)
        node.set("interrupts-extended", tree.per_hart(IRQ_MEI, IRQ_SEI))
        node.set("interrupt-controller")
        node.set("#address-cells", 0).set("#interrupt-cells", 1)

    def save(self) -> dict:
        return {"priority": list(self.priority), "level": [int(x) for x in self.level],
                "pending": [int(x) for x in self.pending],
                "in_service": [int(x) for x in self.in_service],
                "deferred_edge": [int(x) for x in self.deferred_edge],
                "enable": {str(k): int(v) for k, v in self.enable.items()},   # text keys, as in a snapshot
                "threshold": {str(k): int(v) for k, v in self.threshold.items()}}

    def restore(self, state: dict) -> None:
        lists = {}
        for name in ("priority", "level", "pending", "in_service", "deferred_edge"):
            lists[name] = saved(state, name, list)
            if len(lists[name]) != SOURCES or not all(type(v) is int for v in lists[name]):
                raise ValueError(f"PLIC {name}: expected {SOURCES} integers")
        self.priority = [v & PRIORITY_MASK for v in lists["priority"]]
        self.level = [bool(v) for v in lists["level"]]
        self.pending = [bool(v) for v in lists["pending"]]
        self.in_service = [bool(v) for v in lists["in_service"]]
        self.deferred_edge = [bool(v) for v in lists["deferred_edge"]]
        self.enable = {int(k): saved(state["enable"], k, int) & ((1 << SOURCES) - 2)
                       for k in saved(state, "enable", dict) if _context(k, self.contexts)}
        self.threshold = {int(k): saved(state["threshold"], k, int) & PRIORITY_MASK
                          for k in saved(state, "threshold", dict) if _context(k, self.contexts)}
        self._update()


def _context(key: str, contexts: int) -> bool:
    """Is a saved dictionary key a context number of this PLIC?"""
    return key.isdigit() and int(key) < contexts
