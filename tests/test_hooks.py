"""Python hooks on the machine (hartvm/hooks.py): code, memory and trap hooks
on bare-metal programs, changing guest state and stopping the machine. The
README's example runs them on Linux (tests/test_readme.py)."""

import subprocess

import pytest

from conftest import build_c
from hartvm import HostIO, Machine
from hartvm.cpu import layout as L
from hartvm.errors import HartvmError
from hartvm.machine import Stop


def _symbols(elf: str) -> dict[str, int]:
    lines = subprocess.run(["nm", elf], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in map(str.split, lines.splitlines())
            if len(parts) == 3}


@pytest.fixture(scope="module")
def debuggee(toolchain):
    elf = build_c("debuggee")
    return elf, _symbols(elf)


def _machine(elf: str) -> tuple[Machine, list]:
    console = []
    machine = Machine(memory_size=16 << 20, io=HostIO(output=console.append))
    machine.load_kernel(elf)
    return machine, console


def test_code_hook_sees_each_call_and_can_change_it(debuggee):
    elf, symbols = debuggee
    machine, console = _machine(elf)
    calls = []

    def add_square(hart):
        calls.append((hart.reg("a0"), hart.pc, hart.privilege))
        hart.set_reg("a0", 1)                 # every call adds 1 instead
    machine.hook_code(symbols["add_square"], add_square)
    result = machine.run(max_instructions=10**6)
    assert [c[0] for c in calls] == list(range(8))
    assert {c[1:] for c in calls} == {(symbols["add_square"], L.PRIV_M)}
    assert result.stop is Stop.EXITED and b"".join(console) == b"total 8\n"


def test_memory_hooks_see_loads_and_stores_with_their_values(debuggee):
    elf, symbols = debuggee
    machine, console = _machine(elf)
    total = symbols["total"]
    stores, accesses = [], []
    machine.hook_memory(total, total + 8, lambda hart, access: stores.append(access.value))
    machine.hook_memory(total + 4, total + 5,
                        lambda hart, access: accesses.append((access.kind, access.size,
                                                              access.address)), access="rw")
    result = machine.run(max_instructions=10**6)
    assert result.stop is Stop.EXITED and b"".join(console) == b"total 140\n"
    # crt0 clears .bss; then each call stores the running sum.
    assert stores == [0, 0, 1, 5, 14, 30, 55, 91, 140]
    # Each call loads total twice (+=, return) and stores it once; printf loads it.
    assert accesses.count(("w", 8, total)) == 9 and accesses.count(("r", 8, total)) == 17
    assert len(accesses) == 26


def test_trap_hook_sees_every_trap_after_entry(toolchain):
    machine, console = _machine(build_c("traps"))
    traps = []
    machine.hook_trap(lambda hart, trap: traps.append(
        (trap.cause, trap.interrupt, trap.privilege, hart.pc == hart.csr("mtvec") & ~3,
         hart.csr("mepc") == trap.epc, hart.csr("mtval") == trap.tval)))
    result = machine.run(max_instructions=10**7)
    assert result.stop is Stop.EXITED and result.status == 0, b"".join(console)
    assert [t[0] for t in traps] == [11, 3, 3, 2, 2, 2, 5, 7]
    assert all(t[1:] == (False, L.PRIV_M, True, True, True) for t in traps)


def test_a_hook_stops_the_machine_before_the_instruction(debuggee):
    elf, symbols = debuggee
    machine, console = _machine(elf)
    calls = []

    def stop_at_third(hart):
        calls.append(hart.reg("a0"))
        if len(calls) == 3:
            hart.stop()
    hook = machine.hook_code(symbols["add_square"], stop_at_third)
    result = machine.run(max_instructions=10**6)
    assert result.stop is Stop.HOOK and machine.harts[0].pc == symbols["add_square"]
    # Run on: the hooked instruction runs without calling the hook again.
    steps = machine.harts[0].steps
    assert machine.run(max_instructions=1).instructions == 1
    assert machine.harts[0].steps == steps + 1 and calls == [0, 1, 2]
    hook.remove()
    assert machine.run(max_instructions=10**6).stop is Stop.EXITED
    assert calls == [0, 1, 2] and b"".join(console) == b"total 140\n"
    assert machine.harts[0].state[L.CHECKS] == 0     # nothing checked once removed


def test_memory_hook_stop_is_before_the_store(debuggee):
    elf, symbols = debuggee
    machine, _ = _machine(elf)
    total = symbols["total"]
    machine.hook_memory(total, total + 8,
                        lambda hart, access: hart.stop() if access.value == 5 else None)
    assert machine.run(max_instructions=10**6).stop is Stop.HOOK
    assert machine.ram.read_u64(total) == 1             # 5 is not stored yet
    machine.run(max_instructions=1)
    assert machine.ram.read_u64(total) == 5


@pytest.mark.parametrize("call", [
    lambda m: m.hook_code(-1, print),
    lambda m: m.hook_code(2**64, print),
    lambda m: m.hook_code(0x80000000, None),
    lambda m: m.hook_memory(0x1000, 0x1000, print),
    lambda m: m.hook_memory(0x1000, 0x2000, print, access="x"),
    lambda m: m.hook_memory("0x1000", 0x2000, print),
    lambda m: m.hook_trap(42),
])
def test_bad_hooks_are_refused_in_one_line(call):
    with pytest.raises(HartvmError) as error:
        call(Machine(memory_size=16 << 20))
    assert "\n" not in str(error.value)


def test_hart_view_refuses_bad_registers_and_memory(debuggee):
    elf, symbols = debuggee
    machine, _ = _machine(elf)
    seen = []

    def look(hart):
        for bad in (lambda: hart.reg("x32"), lambda: hart.csr("nope"),
                    lambda: hart.read_physical(0, 8), lambda: hart.read(2**64 - 4, 8)):
            with pytest.raises(HartvmError):
                bad()
        seen.append(hart.read(symbols["squares"], 16) == machine.ram.read(symbols["squares"], 16))
        hart.stop()
    machine.hook_code(symbols["add_square"], look)
    assert machine.run(max_instructions=10**6).stop is Stop.HOOK and seen == [True]
