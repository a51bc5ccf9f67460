"""Reverse execution with several harts: the machine's rounds do not depend on
how a run is cut (machine.py), so re-executing from a checkpoint meets the
same states, and the debugger goes back on any hart (vmm/debugger.py)."""

import hashlib
import subprocess

import pytest

from conftest import build_c
from hartvm import HostIO, Machine
from hartvm.cpu import layout as L
from hartvm.machine import Stop
from hartvm.vmm.debugger import Debugger


@pytest.fixture(scope="module")
def program(toolchain):
    elf = build_c("debuggee_smp")
    lines = subprocess.run(["nm", elf], capture_output=True, text=True, check=True).stdout
    symbols = {parts[2]: int(parts[0], 16) for parts in map(str.split, lines.splitlines())
               if len(parts) == 3}
    return elf, symbols


def _machine(elf):
    output = []
    machine = Machine(memory_size=16 << 20, harts=2, io=HostIO(output=output.append))
    machine.load_kernel(elf)
    return machine, output


def _state(machine) -> str:
    digest = hashlib.sha256(machine.ram.read(machine.ram.base, machine.ram.size))
    for hart in machine.harts:     # registers, pc, privilege, counters and the CSRs
        digest.update(hart.state[:L.STEPS + 1].tobytes())
        digest.update(hart.state[L.CSR:L.CSR + 4096].tobytes())
    return digest.hexdigest()


def test_how_a_run_is_cut_changes_nothing(program):
    elf, _ = program
    whole, whole_output = _machine(elf)
    result = whole.run(max_instructions=10**8)
    assert result.stop is Stop.EXITED and result.status == 0
    expected = sum(range(200000))
    assert b"".join(whole_output) == f"{expected} {expected} {3 * expected}\n".encode()
    cut, cut_output = _machine(elf)
    while True:                              # runs of a prime number of instructions
        if cut.run(max_instructions=7919).stop is Stop.EXITED:
            break
    assert b"".join(cut_output) == b"".join(whole_output)
    assert [h.steps for h in cut.harts] == [h.steps for h in whole.harts]
    assert _state(cut) == _state(whole)


def test_reverse_step_and_continue_on_either_hart(program):
    elf, symbols = program
    machine, output = _machine(elf)
    debugger = Debugger(machine)
    # Forward, stepping hart 1 now and then, states seen at each position.
    seen = {}
    for stop in (300_000, 2_500_000):
        debugger.resume(stop_at=stop)
        seen[debugger.position] = _state(machine)
    trail = []
    for _ in range(5):
        trail.append((machine.harts[1].pc, machine.harts[1].steps, _state(machine)))
        assert debugger.step(1).kind == "step"
    # Back on hart 1: each step back meets hart 1 as it was before that step.
    for pc, steps, _ in reversed(trail):
        assert debugger.reverse_step(1).kind == "step"
        assert (machine.harts[1].pc, machine.harts[1].steps) == (pc, steps)
    # Breakpoints hit by both harts, then back to the hit before the last.
    assert debugger.add_breakpoint(0, symbols["work"], 4 if _is_long(machine, symbols) else 2)
    hits = []
    for _ in range(6):
        event = debugger.resume()
        assert event.kind == "breakpoint"
        hart = machine.harts[event.hart]
        hits.append((debugger.position, event.hart, hart.x(10), hart.x(11), _state(machine)))
    assert {hit[1] for hit in hits} <= {0, 1}
    event = debugger.reverse_continue()
    assert event.kind == "breakpoint"
    hart = machine.harts[event.hart]
    assert (debugger.position, event.hart, hart.x(10), hart.x(11), _state(machine)) == hits[-2]
    # And to the states seen going forward.
    debugger._replay_to(2_500_000)
    assert _state(machine) == seen[2_500_000]
    debugger.remove_breakpoint(symbols["work"])
    assert debugger.resume().kind == "exited"
    expected = sum(range(200000))
    assert f"{expected} {expected} {3 * expected}\n".encode() in b"".join(output)


def _is_long(machine, symbols) -> bool:
    parcel = int.from_bytes(machine.ram.read(symbols["work"], 2), "little")
    return parcel & 3 == 3
