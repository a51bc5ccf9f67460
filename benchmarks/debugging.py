"""`make bench`, debugging part: what the GDB stub, triggers, PMP and hooks cost.

Each runs a CPU workload (bare metal, in-process) with nothing set, then
with each facility in place but idle (a trap hook in a program that does
not trap, code and memory hooks on a page the program never touches, a
PMP entry granting all memory, an address trigger on an address never
reached, a debugger attached with a breakpoint that is never hit), then
with a memory hook that fires (its cost per hit). MIPS are the best of
``repeat`` runs, taken in turns; the ratio is against the run with nothing set, so what
"costs nothing when unused" means is visible as ~1.00.
"""

import subprocess
import time

from hartvm import HostIO, Machine
from hartvm.cpu import layout as L
from hartvm.cpu.csr import csr_write
from hartvm.cpu.triggers import TDATA1, TDATA2, TSELECT_CSR
from hartvm.vmm.debugger import Debugger

INSTRUCTIONS = 200_000_000
NOWHERE = 0x80F00000           # a page of RAM the workloads never touch
MCONTROL_EXECUTE_M = (2 << 60) | (1 << 6) | (1 << 2)    # type 2, M-mode, execute


def _machine(elf: str) -> Machine:
    machine = Machine(memory_size=64 << 20, io=HostIO(output=lambda data: None))
    machine.load_kernel(elf)
    return machine


def _pmp(machine):
    state = machine.harts[0].state
    csr_write(state, L.PMPADDR0, (1 << 54) - 1)     # NAPOT over all memory, RWX
    csr_write(state, L.PMPCFG0, 0x1F)


def _trigger(machine):
    state = machine.harts[0].state
    csr_write(state, TSELECT_CSR, 0)
    csr_write(state, TDATA2, NOWHERE)
    csr_write(state, TDATA1, MCONTROL_EXECUTE_M)


def _debugger(machine):
    debugger = Debugger(machine)
    debugger.add_breakpoint(0, NOWHERE, 4)
    return debugger


SETUPS = {
    "nothing set": lambda m: None,
    "trap hook": lambda m: m.hook_trap(lambda hart, trap: None),
    "code hook elsewhere": lambda m: m.hook_code(NOWHERE, lambda hart: None),
    "memory hook elsewhere": lambda m: m.hook_memory(NOWHERE, NOWHERE + 8,
                                                     lambda hart, access: None, "rw"),
    "PMP entry (all memory)": _pmp,
    "trigger armed elsewhere": _trigger,
    "debugger attached": _debugger,
}


def _mips(elf: str, setup, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        machine = _machine(elf)
        debugger = setup(machine)
        started = time.perf_counter()
        if isinstance(debugger, Debugger):
            debugger.resume(stop_at=INSTRUCTIONS)
            executed = machine.instructions
        else:
            executed = machine.run(max_instructions=INSTRUCTIONS).instructions
        best = max(best, executed / (time.perf_counter() - started) / 1e6)
    return best


def _buffer(elf: str) -> int:
    """The address of the workload's static buffer (its first .bss symbol of its own)."""
    lines = subprocess.run(["nm", "-n", elf], capture_output=True, text=True, check=True).stdout
    return next(int(parts[0], 16) for parts in map(str.split, lines.splitlines())
                if len(parts) == 3 and parts[1] == "b")


def _hit_cost(elf: str, data: int) -> tuple[int, float]:
    """(hits, µs a hit) of a read hook over 4 KiB of the workload's buffer."""
    plain = _machine(elf)
    started = time.perf_counter()
    plain.run(max_instructions=20_000_000)
    base = time.perf_counter() - started
    machine, hits = _machine(elf), [0]
    machine.hook_memory(data, data + 4096, lambda hart, access: hits.append(1), "r")
    started = time.perf_counter()
    machine.run(max_instructions=20_000_000)
    spent = time.perf_counter() - started - base
    return len(hits) - 1, spent / max(len(hits) - 1, 1) * 1e6


def main(elfs: dict[str, str], repeat: int = 5) -> None:
    print(f"\ndebugging facilities, idle (MIPS over {INSTRUCTIONS // 10**6}M instructions, "
          f"best of {repeat} runs taken in turns; ratio to nothing set):")
    for name, elf in elfs.items():
        _mips(elf, SETUPS["nothing set"], 1)           # (numba's code loaded)
        best = dict.fromkeys(SETUPS, 0.0)
        for _ in range(repeat):                          # in turns: the host's noise spreads
            for label, setup in SETUPS.items():
                best[label] = max(best[label], _mips(elf, setup, 1))
        for label, mips in best.items():
            print(f"  {name:<8} {label:<24} {mips:7.1f} MIPS  {mips / best['nothing set']:5.2f}")
        hits, cost = _hit_cost(elf, _buffer(elf))
        print(f"  {name:<8} {'read hook that fires':<24} {hits} hits, {cost:.1f} µs a hit")
