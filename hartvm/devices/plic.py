"""The platform-level interrupt controller (SiFive PLIC, as on QEMU's virt board).

Register map (RISC-V PLIC specification 1.0.0, chapter 3): source
priorities at 4*source, pending bits at 0x1000, per-context enable bits at
0x2000 + 0x80*context, per-context threshold at 0x200000 + 0x1000*context
and claim/complete at the threshold + 4. Context 2*N is hart N's M-mode,
2*N+1 its S-mode, as QEMU's virt board numbers them.

The gateway is QEMU's, not the specification's level-triggered one
(hw/intc/sifive_plic.c): a source becomes pending when its device raises
its line (``set_irq(source, True)``, each time it does, as QEMU's
qemu_set_irq calls sifive_plic_irq_request on every call); nothing else
makes it pending. A claim clears the pending bit and marks the source
claimed; a claimed source is not offered again, but a raise while it is
claimed latches its pending bit, which it is offered by after the
completion. A completion ends the claim and makes nothing pending by
itself, so a line that stays high interrupts once, until the device raises
it again. Lowering a line does nothing (see ``set_irq``). Each context's
output drives the hart's MEIP bit (M contexts) or SEIP line (S contexts).
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
    SAVE_VERSION = 2      # 2: QEMU's gateway (pending and claimed bits; no levels, no edges)

    def __init__(self, harts):
        super().__init__()
        self.harts = harts                 # hart state arrays, by hart id
        self.reset()

    def reset(self) -> None:
        self.priority = [0] * SOURCES
        self.pending = 0                   # bit per source, as QEMU's plic->pending words
        self.claimed = 0                   # bit per source, as QEMU's plic->claimed words
        self.enable = {}                   # context -> bitmask of enabled sources
        self.threshold = {}                # context -> threshold
        self._update()

    @property
    def contexts(self) -> int:
        return 2 * len(self.harts)

    # --- interrupt lines ----------------------------------------------------
    def set_irq(self, source: int, level: bool) -> None:
        """A device drives its line: a raise makes the source pending, every time.

        A lowering changes nothing. QEMU v7.2.0's sifive_plic_irq_request
        cleared the pending bit on a lowering (``set_pending(s, irq, level >
        0)``); QEMU commit a84be2baa9ec ("hw/intc: Don't clear pending bits
        on IRQ lowering", in 9.2 and the stable releases, among them the
        Debian 7.2 that is hartvm's yardstick) made it
        ``if (level > 0) { set_pending(s, irq, true); update(s); }``: a
        request, once latched, waits for its claim.
        """
        if level and 0 < source < SOURCES:
            self.pending |= 1 << source
            self._update()

    def pulse(self, source: int) -> None:
        """A request from a device with no line to lower (the VM generation ID):
        pending until claimed, like any raise."""
        self.set_irq(source, True)

    def _best(self, context: int) -> int:
        """The pending, unclaimed, enabled source of highest priority above the
        threshold (the lowest id among equals), or 0: sifive_plic_claimed."""
        candidates = self.pending & ~self.claimed & self.enable.get(context, 0)
        best, best_priority = 0, self.threshold.get(context, 0)
        while candidates:
            lowest = candidates & -candidates
            source = lowest.bit_length() - 1
            if self.priority[source] > best_priority:
                best, best_priority = source, self.priority[source]
            candidates ^= lowest
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
            return (self.pending >> (32 * word)) & 0xFFFFFFFF
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
        """sifive_plic_read, claim register: the best source stops pending and is claimed."""
        source = self._best(context)
        if source:
            self.pending &= ~(1 << source)
            self.claimed |= 1 << source
            self._update()
        return source

    def _complete(self, context: int, source: int) -> None:
        """sifive_plic_write, claim register: any source id ends that source's
        claim, whichever context completes it and whether or not the source is
        enabled there (QEMU checks only ``value < num_sources``; the
        specification would ignore a completion of a source not enabled for
        the context). Nothing becomes pending: only a raise does that."""
        if 0 <= source < SOURCES:
            self.claimed &= ~(1 << source)

    # --- snapshots ----------------------------------------------------------
    def fdt_node(self, tree, region) -> None:
        """Each hart's M-mode and S-mode external interrupts, in context order."""
        node = tree.device("plic", region, ("sifive,plic-1.0.0", "riscv,plic0"))
        node.set("phandle", tree.plic_phandle).set("riscv,ndev", SOURCES - 1)
        node.set("interrupts-extended", tree.per_hart(IRQ_MEI, IRQ_SEI))
        node.set("interrupt-controller")
        node.set("#address-cells", 0).set("#interrupt-cells", 1)

    def save(self) -> dict:
        return {"priority": list(self.priority), "pending": _bit_list(self.pending),
                "claimed": _bit_list(self.claimed),
                "enable": {str(k): int(v) for k, v in self.enable.items()},   # text keys, as in a snapshot
                "threshold": {str(k): int(v) for k, v in self.threshold.items()}}

    def restore(self, state: dict) -> None:
        lists = {}
        for name in ("priority", "pending", "claimed"):
            lists[name] = saved(state, name, list)
            if len(lists[name]) != SOURCES or not all(type(v) is int for v in lists[name]):
                raise ValueError(f"PLIC {name}: expected {SOURCES} integers")
        for name in ("pending", "claimed"):
            if not all(v in (0, 1) for v in lists[name]):
                raise ValueError(f"PLIC {name}: expected bits (0 or 1)")
            if lists[name][0]:
                raise ValueError(f"PLIC {name}: source 0 does not exist")
        self.priority = [v & PRIORITY_MASK for v in lists["priority"]]
        self.pending = sum(v << source for source, v in enumerate(lists["pending"]))
        self.claimed = sum(v << source for source, v in enumerate(lists["claimed"]))
        self.enable = {int(k): saved(state["enable"], k, int) & ((1 << SOURCES) - 2)
                       for k in saved(state, "enable", dict) if _context(k, self.contexts)}
        self.threshold = {int(k): saved(state["threshold"], k, int) & PRIORITY_MASK
                          for k in saved(state, "threshold", dict) if _context(k, self.contexts)}
        self._update()


def _bit_list(bits: int) -> list[int]:
    """A bitmask of sources as one 0 or 1 per source, as a snapshot holds it."""
    return [bits >> source & 1 for source in range(SOURCES)]


def _context(key: str, contexts: int) -> bool:
    """Is a saved dictionary key a context number of this PLIC?"""
    return key.isdigit() and int(key) < contexts
