"""A hart: its state array plus the Python-side helpers around the run loop.

The numba code only ever sees ``Hart.state`` (layout in ``layout.py``) and
the RAM/ROM arrays. This class resets the state, exposes registers and
CSRs to Python, completes MMIO accesses after an exit and saves/restores
the state for snapshots.
"""

import numpy as np

from . import layout as L
from .checks import HOST_CHECKS
from .compressed import EXPANSION_TABLE
from .csr import csr_read, guest_checks
from .disasm import disassemble
from .fpu import write_result
from .interp import fetch, run
from .mmu import tlb_flush
from .trap import take_trap
from .triggers import TDATA1_RESET

MASK64 = 2**64 - 1
COUNTER_LIMIT = 1 << 62


def _signed(value: int) -> int:
    value &= MASK64
    return value - 2**64 if value >= 2**63 else value


class Hart:
    def __init__(self, hartid: int, ram, rom_base: int, rom_halfwords: np.ndarray):
        self.hartid = hartid
        self.ram = ram
        self.rom_halfwords = rom_halfwords
        self.state = np.zeros(L.STATE_SIZE, np.int64)
        self._rom_base = rom_base
        self.reset(0)

    def reset(self, pc: int) -> None:
        """Architectural reset (privileged spec 3.4): M-mode, mstatus.MIE=0, pc."""
        s = self.state
        steps = s[L.STEPS]          # a count for the host (--max-instructions): keep it
        s[:] = 0
        s[L.STEPS] = steps
        s[L.PC] = pc
        s[L.PRIV] = L.PRIV_M
        s[L.RESERVATION] = -1
        # QEMU 7.2's ACLINT resets mtimecmp to 0 (riscv_aclint_mtimer_reset_enter
        # writes 0 through its timecmp path), so mip.MTIP is set from the start:
        # software disarms the timer (-1) before it enables MTIE.
        s[L.MTIMECMP] = 0
        s[L.HARTID] = self.hartid
        s[L.RAM_BASE] = self.ram.base
        s[L.RAM_SIZE] = self.ram.size
        s[L.ROM_BASE] = self._rom_base
        s[L.ROM_SIZE] = 2 * len(self.rom_halfwords)
        s[L.WATCH_PADDR] = -1
        s[L.CSR + L.MISA] = L.MISA_VALUE
        s[L.CSR + L.MHARTID] = self.hartid
        s[L.CSR + L.MSTATUS] = L.MSTATUS_UXL | L.MSTATUS_SXL
        for i in range(L.TRIGGER_COUNT):
            s[L.TRIGGERS + 3 * i] = TDATA1_RESET

    # --- running ------------------------------------------------------------
    def run(self, budget: int) -> int:
        ram = self.ram
        return int(run(self.state, ram.m8, ram.m16, ram.m32, ram.m64,
                       self.rom_halfwords, EXPANSION_TABLE, budget))

    def complete_load(self, value: int) -> None:
        """Finish an MMIO load: write the destination register and retire it."""
        s = self.state
        size = int(s[L.EXIT_SIZE])
        flags = int(s[L.EXIT_FLAGS])
        value &= (1 << (8 * size)) - 1
        if flags & L.MMIO_FP:
            # the FPU's own register write: NaN-boxing of singles, FS Dirty
            write_result(s, int(s[L.EXIT_RD]), _signed(value), size == 8)
        else:
            if not flags & L.MMIO_UNSIGNED and value >> (8 * size - 1):
                value -= 1 << (8 * size)
            rd = int(s[L.EXIT_RD])
            if rd:
                s[rd] = _signed(value)
        self.retire_mmio()

    def retire_mmio(self) -> None:
        s = self.state
        s[L.PC] += s[L.EXIT_ILEN]
        s[L.INSTRET] += 1
        s[L.CYCLE] += 1
        s[L.STEPS] += 1

    def fault_mmio(self) -> None:
        """The MMIO access hit no device: raise an access fault in the guest."""
        s = self.state
        write = int(s[L.EXIT_FLAGS]) & L.MMIO_WRITE
        cause = L.CAUSE_STORE_ACCESS if write else L.CAUSE_LOAD_ACCESS
        self.trap(cause, int(s[L.EXIT_VADDR]))
        s[L.INSTRET] += 1  # a step, as inside the run loop (take_trap took it back)
        s[L.CYCLE] += 1
        s[L.STEPS] += 1

    def breakpoint_trap(self) -> None:
        """The ebreak at pc, stopped at for a debugger that set no breakpoint there:
        the guest's own, so it traps, as a step, as inside the run loop."""
        s = self.state
        self.trap(L.CAUSE_BREAKPOINT, int(s[L.PC]))
        s[L.INSTRET] += 1
        s[L.CYCLE] += 1
        s[L.STEPS] += 1

    def trap(self, cause: int, tval: int) -> None:
        s = self.state
        s[L.PC] = take_trap(s, cause, _signed(tval), int(s[L.PC]), False) & ~1

    def arm(self, watches: np.ndarray, host_checks: int, trap_exits: bool) -> None:
        """The host's checks (checks.py): the WATCHES table and the HOST_CHECKS bits
        that are on, and whether traps leave the run loop. The TLB is flushed
        when the checks change: it may hold pages that are watched now."""
        s = self.state
        s[L.TRAP_EXITS] = trap_exits
        checks = (int(s[L.CHECKS]) & ~HOST_CHECKS) | host_checks
        table = s[L.WATCHES:L.WATCHES + 3 * L.WATCH_ENTRIES]
        if checks != s[L.CHECKS] or not np.array_equal(table, watches):
            table[:] = watches
            s[L.CHECKS] = checks
            tlb_flush(s)

    # --- inspection ---------------------------------------------------------
    def translate(self, vaddr: int, fetch: bool = False) -> int | None:
        """The physical address of ``vaddr`` for a load (or a ``fetch``) as the hart
        sees it now (its privilege, MPRV and satp; translation off: the address
        itself), or None.
        A read-only page walk: unlike the hart's own, it sets no A or D bits and
        fills no TLB entry (privileged spec 12.3.2), so a debugger or a hook
        that reads memory leaves no trace in the guest."""
        vaddr &= MASK64
        satp = self.csr(L.SATP)
        priv = self.priv
        status = self.csr(L.MSTATUS)
        if priv == L.PRIV_M and status & L.MSTATUS_MPRV and not fetch:
            priv = (status & L.MSTATUS_MPP) >> L.MSTATUS_MPP_SHIFT
        if priv == L.PRIV_M or satp >> 60 == 0:
            return vaddr
        levels = {8: 3, 9: 4, 10: 5}.get(satp >> 60)
        if levels is None:
            return None
        bits = 12 + 9 * levels
        top = vaddr >> (bits - 1)
        if top not in (0, (1 << (65 - bits)) - 1):
            return None                     # not sign-extended: no page maps it
        ram = self.ram
        table = (satp & ((1 << 44) - 1)) << 12
        for level in reversed(range(levels)):
            entry = table + ((vaddr >> (12 + 9 * level)) & 0x1FF) * 8
            if not ram.contains(entry, 8):
                return None
            pte = ram.read_u64(entry)
            if not pte & 1:
                return None
            ppn = (pte >> 10) & ((1 << 44) - 1)
            if pte & 0xA:                    # R or X: a leaf (a superpage above level 0)
                mask = (1 << (12 + 9 * level)) - 1
                return ((ppn << 12) & ~mask) | (vaddr & mask)
            table = ppn << 12
        return None

    def peek_instruction(self):
        """(bits, length) of the instruction at pc, or (cause, 0) if fetching it faults."""
        word, length, _ = fetch(self.state, self.ram.m16, self.ram.m64, self.rom_halfwords,
                                self.ram.base, int(self.state[L.PC]))
        return int(word) & 0xFFFFFFFF, int(length)

    def trace_line(self) -> str:
        """One line of the instruction trace: hart, privilege, pc, bits, disassembly."""
        word, length = self.peek_instruction()
        prefix = f"{self.hartid} {'USHM'[self.priv]} {self.pc:016x}: "
        if length == 0:
            return prefix + f"fetch fault (cause {word})"
        bits = f"{word:04x}    " if length == 2 else f"{word:08x}"
        return prefix + bits + "  " + disassemble(word, length)

    @property
    def pc(self) -> int:
        return int(self.state[L.PC]) & MASK64

    @pc.setter
    def pc(self, value: int) -> None:
        self.state[L.PC] = _signed(value)

    def x(self, index: int) -> int:
        """Integer register ``index`` as an unsigned 64-bit value."""
        return int(self.state[index]) & MASK64

    def set_x(self, index: int, value: int) -> None:
        if index:
            self.state[index] = _signed(value)

    def csr(self, number: int) -> int:
        if not 0 <= number < 4096:
            raise KeyError(f"CSR number {number:#x} out of range")
        value, ok = csr_read(self.state, number)
        if not ok:
            raise KeyError(f"CSR {number:#x} is not implemented")
        return int(value) & MASK64

    @property
    def priv(self) -> int:
        return int(self.state[L.PRIV])

    @property
    def instret(self) -> int:
        """Instructions retired."""
        return int(self.state[L.INSTRET])

    @property
    def steps(self) -> int:
        """Instructions executed, including those that trapped."""
        return int(self.state[L.STEPS])

    def dump(self) -> str:
        """Registers as text, for fatal-error reports and --trace."""
        names = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"] + \
            [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + \
            [f"t{i}" for i in range(3, 7)]
        lines = [f"hart {self.hartid}  pc {self.pc:016x}  priv {'USHM'[self.priv]}  "
                 f"instret {self.instret}"]
        for row in range(8):
            lines.append("  ".join(f"{names[i]:>4} {self.x(i):016x}"
                                   for i in range(row * 4, row * 4 + 4)))
        for name, number in (("mstatus", L.MSTATUS), ("mcause", L.MCAUSE),
                             ("mepc", L.MEPC), ("mtval", L.MTVAL), ("mtvec", L.MTVEC)):
            lines.append(f"{name:>8} {self.csr(number):016x}")
        return "\n".join(lines)

    # --- snapshots ----------------------------------------------------------
    SAVE_VERSION = 1

    def save(self) -> dict:
        return {"state": self.state.copy()}

    def restore(self, saved: dict) -> None:
        state = saved.get("state") if isinstance(saved, dict) else None
        if not isinstance(state, np.ndarray) or state.dtype != np.int64 \
                or state.shape != self.state.shape:
            raise ValueError("hart state has the wrong shape or type")
        if state[L.PRIV] not in (L.PRIV_U, L.PRIV_S, L.PRIV_M) or state[L.HARTID] != self.hartid:
            raise ValueError("hart state has a bad privilege level or hart id")
        # Counters are added to as the hart runs: far from overflowing, as after a boot.
        for slot in (L.CYCLE, L.INSTRET, L.STEPS):
            if not 0 <= state[slot] < COUNTER_LIMIT:
                raise ValueError("hart state has a counter out of range")
        if not -COUNTER_LIMIT < state[L.TIME_OFFSET] < COUNTER_LIMIT:
            raise ValueError("hart state has a time offset out of range")
        if not 0 <= state[L.TSELECT] < L.TRIGGER_COUNT:
            raise ValueError("hart state selects a trigger that does not exist")
        self.state[:] = state
        # Where RAM and ROM are is a property of this machine, not of the snapshot.
        self.state[L.RAM_BASE] = self.ram.base
        self.state[L.RAM_SIZE] = self.ram.size
        self.state[L.ROM_BASE] = self._rom_base
        self.state[L.ROM_SIZE] = 2 * len(self.rom_halfwords)
        self.state[L.TLB:] = 0  # a cache: never trusted from a snapshot
        self.state[L.WATCH_PADDR] = -1   # snapshots hold no HTIF machines
        self.state[L.DEBUG_EBREAK] = 0   # nor debuggers
        self.state[L.CHECKS] = 0         # nor hooks (the machine arms its own);
        self.state[L.TRAP_EXITS] = 0
        guest_checks(self.state)         # PMP and triggers follow the restored CSRs
