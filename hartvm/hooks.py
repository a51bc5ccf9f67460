"""Python hooks on the whole machine: Unicorn's idea, on a machine that boots Linux.

``Machine.hook_code(address, fn)`` calls ``fn(hart)`` before the instruction
at ``address`` executes; ``Machine.hook_memory(start, end, fn, access="w")``
calls ``fn(hart, access)`` before a load (``"r"``), a store (``"w"``) or
either (``"rw"``) touches [start, end) (an AMO is a store; so is an SC);
``Machine.hook_trap(fn)`` calls ``fn(hart, trap)`` when a hart has entered
a trap handler: every exception and interrupt, system calls from U-mode
among them. Addresses are as the hart sees them: virtual while translation
is on, as in Unicorn's hooks and QEMU's watchpoints. Each returns a ``Hook``
whose ``remove()`` takes it away.

The callback's ``hart`` (``HartView``) reads and writes registers, CSRs and
memory (by virtual address through the hart's own translation, or by
physical address), and ``stop()`` ends ``Machine.run`` with ``Stop.HOOK``:
stopped by a code or memory hook, the hart has not executed the instruction
yet, and does so when the machine runs again, without calling the hook again.

What they cost (checks.py): nothing while no hook is set. A code or memory
hook keeps its page out of the TLB, so each access to that page (each
instruction, for a code hook) takes the slow path, and each hit leaves the
compiled loop for Python. A trap hook makes every trap leave the loop.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cpu import layout as L
from .cpu.checks import CHECK_WATCH
from .cpu.compressed import EXPANSION_TABLE
from .cpu.disasm import CSRS
from .cpu.mmu import ACCESS_FETCH, ACCESS_LOAD, ACCESS_STORE
from .errors import HartvmError, quoted

MASK64 = (1 << 64) - 1
ACCESS_KINDS = {"r": (ACCESS_LOAD,), "w": (ACCESS_STORE,), "rw": (ACCESS_LOAD, ACCESS_STORE)}
KIND_NAMES = {ACCESS_FETCH: "x", ACCESS_LOAD: "r", ACCESS_STORE: "w"}
REGISTER_NAMES = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"] + \
    [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + [f"t{i}" for i in range(3, 7)]
REGISTERS = {name: i for i, name in enumerate(REGISTER_NAMES)} | \
    {f"x{i}": i for i in range(32)} | {"fp": 8}
CSR_NUMBERS = {name: number for number, name in CSRS.items()}


@dataclass(frozen=True)
class Access:
    """A load or store a memory hook sees, before it is made: ``kind`` "r" or "w",
    the ``address`` (as the hart sees it) and ``size`` in bytes; for a store,
    the ``value`` the instruction stores (an AMO's operand), else None."""
    kind: str
    address: int
    size: int
    value: int | None


@dataclass(frozen=True)
class Trap:
    """A trap a hart has just taken: ``cause`` (mcause's code), whether it is an
    ``interrupt``, ``tval``, ``epc`` (the pc it was raised at) and ``privilege``
    (0 U, 1 S, 3 M) it came from. A system call from U-mode is cause 8."""
    cause: int
    interrupt: bool
    tval: int
    epc: int
    privilege: int

    @property
    def syscall(self) -> bool:
        return not self.interrupt and self.cause == L.CAUSE_ECALL_U


class HartView:
    """A hook's hold on the hart it runs for."""

    def __init__(self, machine, index: int):
        self._machine = machine
        self.index = index
        self._hart = machine.harts[index]

    @property
    def pc(self) -> int:
        return self._hart.pc

    @pc.setter
    def pc(self, value: int) -> None:
        self._hart.pc = value

    @property
    def privilege(self) -> int:
        """0 U, 1 S, 3 M."""
        return self._hart.priv

    def reg(self, name: str | int) -> int:
        """An integer register by ABI name ("a7") or number, unsigned."""
        return self._hart.x(_register(name))

    def set_reg(self, name: str | int, value: int) -> None:
        self._hart.set_x(_register(name), value)

    def csr(self, name: str | int) -> int:
        return self._hart.csr(_csr(name))

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at a virtual address, through the hart's translation."""
        return self._memory(address, size, None)

    def write(self, address: int, data: bytes) -> None:
        self._memory(address, len(data), bytes(data))

    def read_physical(self, address: int, size: int) -> bytes:
        self._check_ram(address, size)
        return self._machine.ram.read(address, size)

    def write_physical(self, address: int, data: bytes) -> None:
        self._check_ram(address, len(data))
        self._machine.ram.write(address, bytes(data))

    def stop(self) -> None:
        """End ``Machine.run`` after this hook (``Stop.HOOK``)."""
        self._machine.hook_stop = True

    def _memory(self, address, size, data):
        out = bytearray()
        done = 0
        while done < size:
            vaddr = (address + done) & MASK64
            piece = min(size - done, 0x1000 - (vaddr & 0xFFF))
            paddr = self._hart.translate(vaddr)
            if paddr is None:
                raise HartvmError(f"no RAM at virtual address {vaddr:#x}: not mapped")
            self._check_ram(paddr, piece)
            if data is None:
                out += self._machine.ram.read(paddr, piece)
            else:
                self._machine.ram.write(paddr, data[done:done + piece])
            done += piece
        return bytes(out)

    def _check_ram(self, address, size):
        if type(address) is not int or type(size) is not int or size < 0 or \
                not self._machine.ram.contains(address, size):
            raise HartvmError(f"no RAM at {quoted(address)} for {quoted(size)} bytes")


def _register(name) -> int:
    number = REGISTERS.get(name) if isinstance(name, str) else name
    if type(number) is not int or not 0 <= number < 32:
        raise HartvmError(f"no integer register {quoted(name)}")
    return number


def _csr(name) -> int:
    number = CSR_NUMBERS.get(name) if isinstance(name, str) else name
    if type(number) is not int or not 0 <= number < 4096:
        raise HartvmError(f"no CSR {quoted(name)}")
    return number


@dataclass(eq=False)
class Hook:
    """A hook set on a machine; ``remove()`` takes it away."""
    hooks: "Hooks"
    fn: Callable
    start: int = 0
    end: int = 0
    kinds: tuple = ()

    def remove(self) -> None:
        self.hooks.remove(self)


class Hooks:
    """A machine's hooks, and the checks they need in its harts (checks.py)."""

    def __init__(self):
        self.watches: list[Hook] = []       # code and memory hooks
        self.traps: list[Hook] = []

    def code(self, address: int, fn: Callable) -> Hook:
        address = _address(address, "address")
        return self._add(self.watches, Hook(self, _callable(fn), address, address + 1,
                                            (ACCESS_FETCH,)))

    def memory(self, start: int, end: int, fn: Callable, access: str = "w") -> Hook:
        start, end = _address(start, "start"), _address(end, "end")
        if end <= start:
            raise HartvmError(f"bad memory hook range {start:#x}-{end:#x}: end must be above start")
        if access not in ACCESS_KINDS:
            raise HartvmError(f"bad access {quoted(access)}: 'r', 'w' or 'rw'")
        return self._add(self.watches, Hook(self, _callable(fn), start, end, ACCESS_KINDS[access]))

    def trap(self, fn: Callable) -> Hook:
        return self._add(self.traps, Hook(self, _callable(fn)))

    def _add(self, hooks: list, hook: Hook) -> Hook:
        if hooks is self.watches and len(self.watches) >= L.WATCH_ENTRIES:
            raise HartvmError(f"at most {L.WATCH_ENTRIES} code and memory hooks at once")
        hooks.append(hook)
        return hook

    def remove(self, hook: Hook) -> None:
        for hooks in (self.watches, self.traps):
            if hook in hooks:
                hooks.remove(hook)

    def arm(self, harts) -> None:
        """Put the hooks' checks in every hart (cheap when nothing changed)."""
        table = np.zeros(3 * L.WATCH_ENTRIES, np.int64)
        for i, hook in enumerate(self.watches):
            table[3 * i:3 * i + 3] = (_signed(hook.start), _signed(hook.end),
                                      sum(1 << kind for kind in hook.kinds))
        checks = CHECK_WATCH if self.watches else 0
        for hart in harts:
            hart.arm(table, checks, bool(self.traps))

    def watch_hit(self, machine, index: int) -> None:
        """Call the hooks of the watched access hart ``index`` left its loop for (EXIT_WATCH)."""
        state = machine.harts[index].state
        address = int(state[L.EXIT_VADDR]) & MASK64
        size = int(state[L.EXIT_SIZE])
        kind = int(state[L.EXIT_FLAGS])
        view = HartView(machine, index)
        access = None
        if kind != ACCESS_FETCH:
            value = _stored_value(machine.harts[index], size) if kind == ACCESS_STORE else None
            access = Access(KIND_NAMES[kind], address, size, value)
        for hook in list(self.watches):
            if kind not in hook.kinds or not (address < hook.end and hook.start < address + size):
                continue
            if kind == ACCESS_FETCH:
                if view.pc == hook.start:      # (not the second half of a straddling one)
                    hook.fn(view)
            else:
                hook.fn(view, access)

    def trap_taken(self, machine, index: int) -> None:
        """Call the trap hooks for the trap hart ``index`` has just taken (EXIT_TRAP)."""
        state = machine.harts[index].state
        mcause = int(state[L.EXIT_VALUE]) & MASK64
        trap = Trap(mcause & ~(1 << 63), bool(mcause >> 63), int(state[L.EXIT_VADDR]) & MASK64,
                    int(state[L.EXIT_PADDR]) & MASK64, int(state[L.EXIT_FLAGS]))
        view = HartView(machine, index)
        for hook in list(self.traps):
            hook.fn(view, trap)


def _stored_value(hart, size: int) -> int | None:
    """The value the store at pc stores (its rs2 register, integer or FP), or
    None if its bits cannot be read."""
    paddr = hart.translate(hart.pc, fetch=True)
    ram = hart.ram
    if paddr is None or not ram.contains(paddr, 2):
        return None
    insn = int.from_bytes(ram.read(paddr, 2), "little")
    if insn & 3 != 3:
        insn = int(EXPANSION_TABLE[insn])          # a compressed store, expanded
    elif ram.contains(paddr, 4):
        insn = int.from_bytes(ram.read(paddr, 4), "little")
    rs2 = (insn >> 20) & 31
    if insn & 0x7F == 0x27:                        # fsw, fsd
        value = int(hart.state[L.FREG + rs2])
    else:                                          # a store, an AMO or SC
        value = hart.x(rs2)
    return value & ((1 << (8 * size)) - 1)


def _address(value, what: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise HartvmError(f"bad {what} {quoted(value)}: an address (0 to 2**64 - 1)")
    return value


def _callable(fn):
    if not callable(fn):
        raise HartvmError(f"a hook must be callable, not a {type(fn).__name__}")
    return fn


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value
