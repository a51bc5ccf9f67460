"""Random instruction words never crash the host: each executes or traps.

100,000 random 32-bit words and 100,000 random 16-bit parcels run one at a
time as the only instruction, with registers that point at random places,
at the edges of RAM and at devices. Every run must end in one of the
outcomes the architecture allows: the instruction retired, or the hart took
a synchronous exception with a legal cause and entered the trap handler.
"""

import random

import numpy as np

from hartvm import Machine
from hartvm.cpu import layout as L

MTVEC = 0x8000_1000
SENTINEL = 0xDEAD
LEGAL_CAUSES = {L.CAUSE_ILLEGAL, L.CAUSE_BREAKPOINT, L.CAUSE_LOAD_MISALIGNED,
                L.CAUSE_LOAD_ACCESS, L.CAUSE_STORE_MISALIGNED, L.CAUSE_STORE_ACCESS,
                L.CAUSE_ECALL_M, L.CAUSE_FETCH_ACCESS}
FS_INITIAL = 1 << 13
RAM_SIZE = 1 << 20


def _register_values(rng, ram_base):
    edges = [ram_base, ram_base + RAM_SIZE, 0x1000_0000, 0x0200_0000, 0x0010_0000, 0x1000, 0]
    values = []
    for _ in range(31):
        kind = rng.random()
        if kind < 0.4:
            values.append(ram_base + rng.randrange(RAM_SIZE))
        elif kind < 0.7:
            values.append(rng.choice(edges) + rng.randrange(-16, 17))
        else:
            values.append(rng.getrandbits(64))
    return values


def _run_words(words, length, seed):
    rng = random.Random(seed)
    machine = Machine(memory_size=RAM_SIZE, output=lambda data: None)
    hart = machine.harts[0]
    base = machine.ram.base
    outcomes = {"retired": 0, "trapped": 0}
    for word in words:
        hart.reset(base)
        state = hart.state
        state[L.CSR + L.MTVEC] = MTVEC
        state[L.CSR + L.MCAUSE] = SENTINEL
        state[L.CSR + L.MSTATUS] |= FS_INITIAL  # let FP instructions execute too
        for index in range(32):
            state[L.FREG + index] = rng.getrandbits(64) - 2**63
        for index, value in enumerate(_register_values(rng, base), start=1):
            hart.set_x(index, value)
        machine.ram.write(base, int(word).to_bytes(length, "little") + b"\x13\x00\x00\x00")
        steps_before = hart.steps   # kept across resets: the host's count
        machine.run(max_instructions=1)
        cause = hart.csr(L.MCAUSE)
        assert hart.x(0) == 0 and hart.steps == steps_before + 1, f"{word:#x}: not one step"
        trapped = hart.pc == MTVEC and hart.csr(L.MEPC) == base and cause != SENTINEL
        if not trapped:  # retired (it may have written mcause itself, as csrw does)
            assert hart.instret == 1, f"{word:#x}: executed but not retired"
            outcomes["retired"] += 1
        else:
            assert cause in LEGAL_CAUSES, f"{word:#x}: cause {cause}"
            assert hart.priv == L.PRIV_M and hart.instret == 0  # a trap does not retire
            if cause == L.CAUSE_ILLEGAL:
                assert hart.csr(L.MTVAL) == word
            outcomes["trapped"] += 1
    return outcomes


def test_random_32bit_words():
    rng = np.random.default_rng(2026)
    words = rng.integers(0, 2**32, size=100_000, dtype=np.uint64) | 3  # 32-bit encodings
    outcomes = _run_words([int(w) for w in words], 4, seed=1)
    assert sum(outcomes.values()) == 100_000
    assert outcomes["retired"] > 1000 and outcomes["trapped"] > 1000


def test_random_16bit_parcels():
    rng = np.random.default_rng(2027)
    parcels = [int(p) for p in rng.integers(0, 2**16, size=100_000) if p & 3 != 3]
    parcels += [int(p) for p in rng.integers(0, 2**16, size=100_000 - len(parcels)) & 0xFFFC]
    outcomes = _run_words(parcels, 2, seed=2)
    assert sum(outcomes.values()) == 100_000
    assert outcomes["retired"] > 1000 and outcomes["trapped"] > 1000
