"""A debugger's hold on a machine: registers, memory through a hart's own
translation, breakpoints, stepping, and reverse execution (issue 13).

The GDB stub (gdbstub.py) is one front end of it; the mechanism is
the machine's, so that it costs nothing while no debugger is attached:

- Breakpoints are ``ebreak`` instructions (``c.ebreak`` over a compressed
  instruction) written into guest RAM while the machine runs, and taken out
  whenever it stops, as GDB itself does with "breakpoint always-inserted
  off": memory read while stopped is the guest's own. With DEBUG_EBREAK set in
  the harts' state, an ``ebreak`` leaves the run loop instead of trapping
  (cpu/system.py); one that is not a breakpoint of ours is the guest's own
  and traps as it would have. A breakpoint is set at the physical address
  its virtual address has when it is set (QEMU checks virtual pcs instead:
  here an address with no mapping yet cannot take one).
- Watchpoints (write, read, access) are the machine's memory hooks
  (hooks.py): only the watched page leaves the TLB (cpu/checks.py), and the
  machine stops before the access.
- Reverse execution needs no recording step: a machine without host input is
  deterministic, so going back to instruction N is restoring the last
  checkpoint before N and running forward to N with the guest's output
  muted. Checkpoints (RAM and every component's state, in memory) are taken
  at attach and then every CHECKPOINT_INTERVAL instructions of forward
  execution or more: taking one (a copy of RAM) may cost at most
  CHECKPOINT_COST of the time spent running forward, so a debugger attached
  to a large machine slows it by a few per cent at most. At most
  MAX_CHECKPOINTS are kept, and at most CHECKPOINT_MEMORY bytes of RAM
  copies (older ones are thinned out), so memory stays bounded and a step
  back re-executes at most the distance between two kept checkpoints.
  ``reverse_continue`` replays each interval between checkpoints, latest first, to find the last breakpoint or
  watchpoint hit before the present. With several harts this holds because
  the machine's rounds do not depend on how execution is cut into runs
  (machine.py), and stepping a hart runs the others as scheduled: a step
  back on a hart goes to where it had executed one instruction fewer. Not
  in realtime mode (idle time follows the host's clock). Live host input
  (keys typed on the console, a command's bytes) is not kept: history starts
  again after each (going back over it would miss it), and none is read while
  re-executing. A replayed record (``--replay``, journal.py) is host input
  that is kept: each checkpoint holds how far into the record it was, and
  re-executing from it delivers the record's inputs again where they came,
  so history spans them.
"""

import contextlib
import time
from dataclasses import dataclass

from ..board.virt import MEMORY_MAP
from ..cpu import layout as L
from ..cpu.csr import csr_read, csr_write
from ..cpu.disasm import CSRS
from ..errors import HartvmError
from ..hooks import Hook
from ..machine import Stop
from .snapshot import decode, encode, machine_sections

CHECKPOINT_INTERVAL = 2_000_000     # instructions between checkpoints while running forward, at least
CHECKPOINT_COST = 0.05              # and at most this share of the time running forward
CHECKPOINT_MEMORY = 1 << 30         # bytes of RAM copies kept, at most
MAX_CHECKPOINTS = 16
RUN_CHUNK = 1_000_000               # instructions between looks at the debugger's socket
EBREAK = (0x00100073).to_bytes(4, "little")
C_EBREAK = (0x9002).to_bytes(2, "little")
MASK64 = (1 << 64) - 1

# GDB's register numbers for RISC-V (gdb/riscv-tdep.h): x0-x31, pc, f0-f31, then
# CSR n as 65 + n, and the privilege level as 65 + 4096.
PC_REGNUM = 32
FIRST_FP_REGNUM = 33
FIRST_CSR_REGNUM = 65
PRIV_REGNUM = FIRST_CSR_REGNUM + 4096


@dataclass
class Event:
    """Why the machine stopped: ``kind`` is "breakpoint", "watch" (an access to
    watched memory is next), "step", "interrupt", "exited" (``status``), "halted"
    (every hart waits forever) or "history" (reverse execution reached the
    first checkpoint)."""
    kind: str
    hart: int = 0
    status: int = 0
    address: int = 0       # the watchpoint's address, for a "watch" stop
    access: str = "w"      # and the accesses it watches: "w", "r" or "rw"


@dataclass
class Checkpoint:
    position: int          # machine.instructions when it was taken
    sections: bytes        # every component's state, encoded (a deep copy)
    ram: bytes
    deliveries: int        # the machine's io.deliveries then
    journal: int | None    # how far into a replayed record (Replay.mark), if one is
    steps: tuple           # each hart's step count then


class Debugger:
    def __init__(self, machine):
        self.machine = machine
        self.breakpoints: dict[int, tuple[int, bytes]] = {}   # vaddr -> (paddr, original)
        self.watchpoints: dict[tuple[int, str], Hook] = {}     # (vaddr, access) -> its hook
        self.watch_hit: tuple[int, int, str] | None = None     # (hart, vaddr, access) of a stop
        self.inserted = False
        self.checkpoints: list[Checkpoint] = []
        self._cost = 0.0         # seconds the last checkpoint took
        self._ran = 0.0          # seconds run forward since
        self.saved: dict[str, Checkpoint] = {}       # by name: monitor savevm/loadvm
        self.reversible = machine.htif is None and not machine.io.realtime
        self.last_hart = 0       # the hart of the last stop: resuming steps it off its breakpoint
        if self.reversible:
            self._checkpoint()

    # --- registers -----------------------------------------------------------
    def read_register(self, hart_index: int, regnum: int) -> int | None:
        """GDB register ``regnum`` of the hart as an unsigned value, None if it has none."""
        state = self.machine.harts[hart_index].state
        if 0 <= regnum < 32:
            return int(state[regnum]) & MASK64
        if regnum == PC_REGNUM:
            return int(state[L.PC]) & MASK64
        if FIRST_FP_REGNUM <= regnum < FIRST_FP_REGNUM + 32:
            return int(state[L.FREG + regnum - FIRST_FP_REGNUM]) & MASK64
        if regnum == PRIV_REGNUM:
            return int(state[L.PRIV])
        if FIRST_CSR_REGNUM <= regnum < PRIV_REGNUM:
            value, ok = csr_read(state, regnum - FIRST_CSR_REGNUM)
            return int(value) & MASK64 if ok else None
        return None

    def write_register(self, hart_index: int, regnum: int, value: int) -> bool:
        state = self.machine.harts[hart_index].state
        signed = value - (1 << 64) if value >> 63 else value
        if 0 < regnum < 32:
            state[regnum] = signed
        elif regnum == 0:
            pass
        elif regnum == PC_REGNUM:
            state[L.PC] = signed & ~1
        elif FIRST_FP_REGNUM <= regnum < FIRST_FP_REGNUM + 32:
            state[L.FREG + regnum - FIRST_FP_REGNUM] = signed
        elif FIRST_CSR_REGNUM <= regnum < PRIV_REGNUM:
            return bool(csr_write(state, regnum - FIRST_CSR_REGNUM, signed))
        else:
            return False
        return True

    @staticmethod
    def csr_names() -> dict[int, str]:
        return dict(CSRS)

    # --- memory ----------------------------------------------------------------
    def translate(self, hart_index: int, vaddr: int) -> int | None:
        """The physical address of ``vaddr`` as the hart sees it now, or None (Hart.translate)."""
        return self.machine.harts[hart_index].translate(vaddr)

    def read_memory(self, hart_index: int, vaddr: int, length: int) -> bytes | None:
        """``length`` bytes at ``vaddr`` (RAM, or the boot ROM: a read must not reach a device), or None."""
        return self._memory(hart_index, vaddr, length, None)

    def write_memory(self, hart_index: int, vaddr: int, data: bytes) -> bool:
        return self._memory(hart_index, vaddr, len(data), data) is not None

    def _memory(self, hart_index, vaddr, length, data):
        out, done = bytearray(), 0
        while done < length:
            address = vaddr + done
            piece = min(length - done, 0x1000 - (address & 0xFFF))
            paddr = self.translate(hart_index, address)
            if paddr is None or data is not None and not self.machine.ram.contains(paddr, piece):
                return None                       # (the boot ROM is read-only, as the guest sees it)
            chunk = self._code(paddr, piece, None if data is None else data[done:done + piece])
            if chunk is None:
                return None
            out += chunk
            done += piece
        return bytes(out)

    # --- breakpoints -------------------------------------------------------------
    def add_breakpoint(self, hart_index: int, vaddr: int, kind: int) -> bool:
        """A breakpoint at ``vaddr``; ``kind`` is its length (2: c.ebreak, 4: ebreak)."""
        if kind not in (2, 4):
            return False
        paddr = self.translate(hart_index, vaddr)
        original = None if paddr is None else self._code(paddr, kind)
        if original is None:
            return False
        self.breakpoints[vaddr & MASK64] = (paddr, original)
        return True

    def remove_breakpoint(self, vaddr: int) -> bool:
        return self.breakpoints.pop(vaddr & MASK64, None) is not None

    def add_watchpoint(self, vaddr: int, length: int, access: str = "w") -> bool:
        """Stop before a store ("w"), load ("r") or either ("rw") touches the
        ``length`` bytes at ``vaddr`` (as the harts see it). A machine memory
        hook (hooks.py): only the watched page leaves the TLB. GDB's RISC-V
        target has non-steppable watchpoints (riscv-tdep.c): told of one
        before the access, as QEMU tells it, GDB steps over the access itself
        to show the old and new values."""
        if not 0 < length <= 1 << 20 or (vaddr, access) in self.watchpoints:
            return False
        vaddr &= MASK64

        def hit(view, _access):
            self.watch_hit = (view.index, vaddr, access)
            view.stop()
        try:
            self.watchpoints[(vaddr, access)] = self.machine.hook_memory(
                vaddr, min(vaddr + length, 1 << 64), hit, access)
        except HartvmError:
            return False                      # (too many at once)
        return True

    def remove_watchpoint(self, vaddr: int, access: str = "w") -> bool:
        hook = self.watchpoints.pop((vaddr & MASK64, access), None)
        if hook is not None:
            hook.remove()
        return hook is not None

    def _code(self, paddr: int, length: int, data: bytes | None = None) -> bytes | None:
        """Read (or write) code in RAM or the boot ROM, where a breakpoint goes; None if neither."""
        if self.machine.ram.contains(paddr, length):
            if data is not None:
                self.machine.ram.write(paddr, data)
            return self.machine.ram.read(paddr, length)
        rom = self.machine.board.devices["rom"].data
        offset = paddr - MEMORY_MAP["rom"].base
        if not (0 <= offset and offset + length <= len(rom)):
            return None
        if data is not None:
            rom[offset:offset + length] = list(data)
        return rom[offset:offset + length].tobytes()

    def _insert(self) -> None:
        for paddr, original in self.breakpoints.values():
            self._code(paddr, len(original), EBREAK if len(original) == 4 else C_EBREAK)
        self.inserted = True
        for hart in self.machine.harts:
            hart.state[L.DEBUG_EBREAK] = 1

    def _take_out(self) -> None:
        for hart in self.machine.harts:
            hart.state[L.DEBUG_EBREAK] = 0
        if self.inserted:
            # Latest first: two breakpoints at one address keep the guest's bytes.
            for paddr, original in reversed(list(self.breakpoints.values())):
                self._code(paddr, len(original), original)
            self.inserted = False

    def _at_breakpoint(self, hart_index: int) -> bool:
        pc = self.machine.harts[hart_index].pc
        return pc in self.breakpoints

    # --- forward ---------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self.machine.instructions

    def step(self, hart_index: int) -> Event:
        """One instruction of the hart (a watchpoint before it does not stop it)."""
        self._maybe_checkpoint()
        self.last_hart = hart_index
        hart = self.machine.harts[hart_index]
        steps = hart.steps
        status = self._step(hart_index)
        if status is None and hart.steps == steps and self.watch_hit is not None:
            self.watch_hit = None             # stopped before a watched access: make it
            status = self._step(hart_index)
        return Event("step", hart_index) if status is None else Event("exited", status=status)

    def _step(self, index: int) -> int | None:
        """One instruction of hart ``index`` (``Machine.step``; with several harts,
        ``Machine.step_in_turn``); the guest's exit status if it ended the guest.
        While a record is replayed, one instruction of ``Machine.run`` instead: its round delivers the record's input due first,
        and a sleeping hart sleeps only until that input (``Machine.step`` polls
        no input and lets a sleeping hart sleep a whole round, past it)."""
        machine = self.machine
        if len(machine.harts) > 1:
            return machine.step_in_turn(index)    # the others run as scheduled
        if not machine.io.replaying:
            return machine.step(index)
        result = machine.run(max_instructions=1)
        return result.status if result.stop is Stop.EXITED else None

    def resume(self, interrupted=lambda: False, stop_at: int | None = None) -> Event:
        """Run every hart until a breakpoint or watchpoint, ``interrupted()``
        (checked between rounds and whenever a wake-up descriptor of the
        machine's io is readable), the guest's end, or the position ``stop_at``."""
        if self._at_breakpoint(self.last_hart):  # step off it, with the guest's bytes there
            status = self._step(self.last_hart)
            if status is not None:
                return Event("exited", status=status)
        while True:
            self._maybe_checkpoint()
            end = self.position + RUN_CHUNK
            if stop_at is not None:
                end = min(end, stop_at)
                if end <= self.position:
                    return Event("step")
            event = self._run(end, interrupted)
            if event is not None:
                self.last_hart = event.hart
                return event

    def _run(self, end: int, interrupted=None) -> Event | None:
        """Run to position ``end`` with the breakpoints in: what stopped it before, or None."""
        machine = self.machine
        while self.position < end:
            self._insert()
            machine.breakpoint_hart = None
            started = time.perf_counter()
            try:
                result = machine.run(until=interrupted, max_instructions=end - self.position)
            finally:
                self._take_out()
                self._ran += time.perf_counter() - started
            if result.stop is Stop.BREAKPOINT:
                index, machine.breakpoint_hart = machine.breakpoint_hart, None
                if self._at_breakpoint(index):
                    return Event("breakpoint", index)
                machine.harts[index].breakpoint_trap()    # the guest's own ebreak
            elif result.stop is Stop.HOOK:
                return self._watch_event()
            elif result.stop is Stop.STOPPED:
                return Event("interrupt")
            elif result.stop is not Stop.INSTRUCTION_LIMIT:
                return self._ended(result)
        return None

    def _watch_event(self) -> Event:
        hart, address, access = self.watch_hit
        self.watch_hit = None
        return Event("watch", hart, address=address, access=access)

    @staticmethod
    def _ended(result) -> Event | None:
        if result.stop is Stop.EXITED:
            return Event("exited", status=result.status)
        if result.stop is Stop.HALTED:
            return Event("halted")
        return None

    # --- backward ------------------------------------------------------------------------
    def _capture(self) -> Checkpoint:
        machine = self.machine
        if self.inserted:
            raise AssertionError("a checkpoint with breakpoints in memory")
        sections = encode([[name, state] for name, _, state in machine_sections(machine)])
        ram = machine.ram.read(machine.ram.base, machine.ram.size)
        io = machine.io
        journal = io.journal.mark() if io.replaying else None
        return Checkpoint(self.position, sections, ram, io.deliveries, journal,
                          tuple(hart.steps for hart in machine.harts))

    def _checkpoint(self) -> None:
        started = time.perf_counter()
        self.checkpoints.append(self._capture())
        self._cost = time.perf_counter() - started
        self._ran = 0.0
        kept = max(2, min(MAX_CHECKPOINTS, CHECKPOINT_MEMORY // self.machine.ram.size))
        if len(self.checkpoints) > kept:
            # Keep the first and the latest; drop every second one in between.
            kept = self.checkpoints[1:-1:2]
            self.checkpoints = [self.checkpoints[0], *kept, self.checkpoints[-1]]

    # --- named snapshots (QEMU's monitor savevm and loadvm, in memory) -----------------
    def save_vm(self, name: str) -> None:
        self.saved[name] = self._capture()

    def load_vm(self, name: str) -> bool:
        """The machine as ``save_vm(name)`` found it; False if there is no such one.
        Reverse history goes on from there: what came after is forgotten."""
        saved = self.saved.get(name)
        if saved is None:
            return False
        self._restore(saved)
        self.machine.io.deliveries = saved.deliveries
        self.checkpoints = [c for c in self.checkpoints if c.position <= saved.position]
        return True

    def _maybe_checkpoint(self) -> None:
        if not self.reversible:
            return
        io = self.machine.io
        if self.checkpoints and self.checkpoints[-1].deliveries != io.deliveries and \
                not io.replaying:
            self.checkpoints = []            # live host input came: history starts again here
        if not self.checkpoints or \
                self.position - self.checkpoints[-1].position >= CHECKPOINT_INTERVAL and \
                self._ran * CHECKPOINT_COST >= self._cost:
            self._checkpoint()

    def _restore(self, checkpoint: Checkpoint) -> None:
        machine = self.machine
        machine.ram.write(machine.ram.base, checkpoint.ram)
        parts = dict([("machine", machine)] + machine.components())
        blobs = machine._blobs
        for name, state in decode(checkpoint.sections):
            parts[name].restore(state)
        machine._blobs = blobs               # (restore forgets what a reset reloads)
        if checkpoint.journal is not None:
            machine.io.journal.seek(checkpoint.journal)

    def _replay_to(self, target: int) -> None:
        """The machine as it was at position ``target`` (at or after the first checkpoint)."""
        checkpoint = max((c for c in self.checkpoints if c.position <= target),
                         key=lambda c: c.position)
        self._restore(checkpoint)
        with self._replaying():
            while self.position < target:
                result = self.machine.run(max_instructions=target - self.position)
                if result.stop is not Stop.HOOK:     # (a watchpoint's: run on)
                    break
            self.watch_hit = None

    @contextlib.contextmanager
    def _replaying(self):
        """Output muted (what the guest wrote then was shown then) and no live host
        input read (a replayed record's is given again: its inputs stay)."""
        io = self.machine.io
        output, inputs, deliveries = io.output, io.inputs, io.deliveries
        io.output = lambda data: None
        if not io.replaying:
            io.inputs = []
        try:
            yield
        finally:
            io.output, io.inputs, io.deliveries = output, inputs, deliveries

    def _check_reversible(self) -> None:
        if not self.reversible:
            raise HartvmError("reverse execution needs a machine without HTIF whose guest "
                              "time follows instructions")
        self._maybe_checkpoint()             # (a fresh history if host input came)

    def reverse_step(self, hart_index: int) -> Event:
        """Back to just before the hart's last instruction: with one hart, one
        position back; with several, to where the hart had executed one
        instruction fewer (the others as they then were)."""
        self._check_reversible()
        self.last_hart = hart_index
        machine = self.machine
        if len(machine.harts) == 1:
            if self.position <= self.checkpoints[0].position:
                return Event("history", hart_index)
            self._replay_to(self.position - 1)
            return Event("step", hart_index)
        hart = machine.harts[hart_index]
        target = hart.steps - 1
        usable = [c for c in self.checkpoints if c.steps[hart_index] <= target]
        if not usable:
            return Event("history", hart_index)
        self._restore(max(usable, key=lambda c: c.position))
        with self._replaying():
            while hart.steps < target:
                steps = hart.steps
                machine.step_in_turn(hart_index, target - steps)
                if hart.steps == steps:
                    break
        self.watch_hit = None
        return Event("step", hart_index)

    def reverse_continue(self) -> Event:
        """Back to the last breakpoint or watchpoint hit before now, or to the start of history."""
        self._check_reversible()
        present = self.position
        for checkpoint in sorted(self.checkpoints, key=lambda c: -c.position):
            if checkpoint.position >= present:
                continue
            hits = self._hits_between(checkpoint, present)
            if hits:
                position, event = hits[-1]
                self._replay_to(position)
                self.last_hart = event.hart
                return event
            present = checkpoint.position
        self._replay_to(self.checkpoints[0].position)
        return Event("history", 0)

    def _hits_between(self, checkpoint: Checkpoint, end: int) -> list[tuple[int, Event]]:
        """The breakpoints and watchpoints reached in [checkpoint, end), with their positions."""
        self._restore(checkpoint)
        hits = []
        with self._replaying():
            while self.position < end:
                event = self._run(end)
                if event is None or event.kind not in ("breakpoint", "watch"):
                    break
                hits.append((self.position, event))
                if event.kind == "breakpoint":
                    self._step(event.hart)        # off it, with the guest's bytes there
        return hits
