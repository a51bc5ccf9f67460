"""The machine: a board, its harts and the run loop that serves their exits.

``Machine.run`` is the vCPU loop of ARCHITECTURE.md: it calls the hart's
compiled ``run`` with an instruction budget and handles what comes back
(MMIO to the bus, WFI, HTIF), until the guest powers off, the instruction
limit is reached, or no hart can make progress.
"""

import enum
import sys
from dataclasses import dataclass

from .board.virt import MEMORY_MAP, VirtBoard
from .cpu import layout as L
from .cpu.csr import mtime
from .cpu.hart import Hart
from .devices.htif import HTIF
from .errors import HartvmError
from .loader.elf import load_elf, read_elf

SLICE = 1_000_000        # instructions per call into the compiled loop
DEFAULT_MEMORY = 128 << 20
# A WFI waiting longer than this (about 29,000 years of guest time) waits forever.
MAX_SLEEP_TICKS = 1 << 53


class Stop(enum.Enum):
    EXITED = "exited"                  # the guest ended with an exit status
    INSTRUCTION_LIMIT = "limit"        # max_instructions was reached
    HALTED = "halted"                  # every hart waits with nothing to wake it


@dataclass
class RunResult:
    stop: Stop
    status: int = 0                    # the guest's exit status for Stop.EXITED
    instructions: int = 0


class Machine:
    def __init__(self, memory_size: int = DEFAULT_MEMORY, output=None):
        self._output = output or _stdout_write
        self._exit_status: int | None = None
        self._reset_requested = False
        self.harts: list[Hart] = []
        self.board = VirtBoard(memory_size, [], self._output, self._guest_exit,
                               self._guest_reset)
        self.ram = self.board.ram
        rom = MEMORY_MAP["rom"]
        self.harts.append(Hart(0, self.ram, rom.base, self.board.rom.halfwords))
        self.board.clint.harts.append(self.harts[0].state)
        self.htif: HTIF | None = None
        self._image = None

    # --- loading --------------------------------------------------------------
    def load_kernel(self, path: str) -> int:
        """Load a bare-metal ELF and make the reset vector jump to its entry."""
        image = read_elf(path)
        load_elf(image, self.ram, path)
        self._image = image
        self.board.set_boot(image.entry)
        tohost = image.symbols.get("tohost")
        if tohost is not None and self.ram.contains(tohost, 8):
            self.htif = HTIF(self.ram, tohost, image.symbols.get("fromhost"),
                             self._output, self._guest_exit)
        self.reset()
        return image.entry

    def reset(self) -> None:
        """Reset every hart to the boot ROM (and reload the kernel's segments)."""
        if self._image is not None and self._reset_requested:
            load_elf(self._image, self.ram)
        self._reset_requested = False
        for hart in self.harts:
            hart.reset(MEMORY_MAP["rom"].base)
            if self.htif is not None:
                hart.state[L.WATCH_PADDR] = self.htif.tohost & ~7

    # --- guest callbacks ------------------------------------------------------
    def _guest_exit(self, status: int) -> None:
        self._exit_status = status

    def _guest_reset(self) -> None:
        self._reset_requested = True

    # --- running --------------------------------------------------------------
    @property
    def instructions(self) -> int:
        """Instructions executed by all harts (trapping ones included)."""
        return sum(hart.steps for hart in self.harts)

    def run(self, max_instructions: int | None = None) -> RunResult:
        hart = self.harts[0]
        start = self.instructions
        try:
            while True:
                budget = SLICE
                if max_instructions is not None:
                    left = max_instructions - (self.instructions - start)
                    if left <= 0:
                        return RunResult(Stop.INSTRUCTION_LIMIT, 0, self.instructions - start)
                    budget = min(budget, left)
                reason = hart.run(budget)
                if reason == L.EXIT_MMIO:
                    self._mmio(hart)
                elif reason == L.EXIT_HTIF and self.htif is not None:
                    self.htif.handle()
                elif reason == L.EXIT_WFI and not self._wake(hart):
                    return RunResult(Stop.HALTED, 0, self.instructions - start)
                elif reason == L.EXIT_BUDGET:
                    _flush_stdout(self._output)  # show console output as it comes
                if self._reset_requested:
                    self.reset()
                if self._exit_status is not None:
                    status, self._exit_status = self._exit_status, None
                    return RunResult(Stop.EXITED, status, self.instructions - start)
        finally:
            _flush_stdout(self._output)

    def _mmio(self, hart: Hart) -> None:
        state = hart.state
        paddr = int(state[L.EXIT_PADDR]) & (2**64 - 1)
        size = int(state[L.EXIT_SIZE])
        if int(state[L.EXIT_FLAGS]) & L.MMIO_WRITE:
            if self.board.bus.write(paddr, size, int(state[L.EXIT_VALUE])):
                hart.retire_mmio()
            else:
                hart.fault_mmio()
        else:
            value = self.board.bus.read(paddr, size)
            if value is None:
                hart.fault_mmio()
            else:
                hart.complete_load(value)

    def _wake(self, hart: Hart) -> bool:
        """WFI with nothing pending: skip time to the next timer event if one can come."""
        state = hart.state
        if not state[L.CSR + L.MIE] & L.MIP_MTIP:
            return bool(state[L.CSR + L.MIP] & state[L.CSR + L.MIE])
        # The ACLINT compares mtime and mtimecmp as unsigned 64-bit numbers.
        now = int(mtime(state)) & (2**64 - 1)
        deadline = int(state[L.MTIMECMP]) & (2**64 - 1)
        if deadline <= now:
            return True               # the interrupt is due now
        ticks = deadline - now
        if ticks > MAX_SLEEP_TICKS:
            return False              # disarmed (e.g. mtimecmp = -1): nothing will come
        cycle = int(state[L.CYCLE])
        state[L.CYCLE] = cycle + ticks * L.CYCLES_PER_TICK - cycle % L.CYCLES_PER_TICK
        return True


def _stdout_write(data: bytes) -> None:
    sys.stdout.buffer.write(data)


def _flush_stdout(output) -> None:
    if output is _stdout_write:
        sys.stdout.buffer.flush()


def parse_size(text: str) -> int:
    """'128M', '1G', '65536' -> bytes. Raises HartvmError for anything else."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in units:
        number, unit = cleaned[:-1], cleaned[-1]
    if not number.isdigit():
        raise HartvmError(f"bad size {text!r}: use a number with an optional K, M or G suffix")
    return int(number) * units[unit]
