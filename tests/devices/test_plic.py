"""The PLIC: priorities, thresholds, enables per context, claim/complete, and the hart lines."""

import numpy as np

from hartvm.cpu import layout as L
from hartvm.devices.plic import PLIC

M0, S0, M1, S1 = 0, 1, 2, 3


def make(harts=2):
    states = [np.zeros(L.STATE_SIZE, np.int64) for _ in range(harts)]
    return PLIC(states), states


def enable(plic, context, source):
    offset = 0x2000 + 0x80 * context + 4 * (source // 32)
    plic.write(offset, 4, plic.read(offset, 4) | 1 << (source % 32))


def claim(plic, context):
    return plic.read(0x200004 + 0x1000 * context, 4)


def test_interrupt_reaches_only_enabled_context_above_threshold():
    plic, states = make()
    plic.write(4 * 10, 4, 3)                # priority 3
    enable(plic, S0, 10)
    plic.set_irq(10, True)
    assert states[0][L.SEIP_LINE] == 1
    assert not states[0][L.CSR + L.MIP] & L.MIP_MEIP and states[1][L.SEIP_LINE] == 0
    plic.write(0x200000 + 0x1000 * S0, 4, 3)  # threshold 3: priority must exceed it
    assert states[0][L.SEIP_LINE] == 0
    plic.write(0x200000 + 0x1000 * S0, 4, 2)
    assert states[0][L.SEIP_LINE] == 1


def test_priority_zero_never_interrupts():
    plic, states = make()
    enable(plic, M0, 5)
    plic.set_irq(5, True)
    assert not states[0][L.CSR + L.MIP] & L.MIP_MEIP
    assert claim(plic, M0) == 0


def test_claim_returns_highest_priority_then_lowest_id():
    plic, states = make()
    for source, priority in ((3, 1), (7, 5), (9, 5)):
        plic.write(4 * source, 4, priority)
        enable(plic, M1, source)
        plic.set_irq(source, True)
    assert states[1][L.CSR + L.MIP] & L.MIP_MEIP
    assert claim(plic, M1) == 7
    assert claim(plic, M1) == 9
    assert claim(plic, M1) == 3
    assert claim(plic, M1) == 0
    assert not states[1][L.CSR + L.MIP] & L.MIP_MEIP


def test_level_source_pends_again_after_complete_while_high():
    plic, states = make()
    plic.write(4 * 10, 4, 1)
    enable(plic, S0, 10)
    plic.set_irq(10, True)
    assert claim(plic, S0) == 10
    assert states[0][L.SEIP_LINE] == 0      # in service: not pending
    plic.write(0x200004 + 0x1000 * S0, 4, 10)   # complete, line still high
    assert states[0][L.SEIP_LINE] == 1
    assert plic.read(0x1000, 4) == 1 << 10
    assert claim(plic, S0) == 10
    plic.set_irq(10, False)
    plic.write(0x200004 + 0x1000 * S0, 4, 10)
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0


def test_hostile_accesses_are_ignored():
    plic, states = make(1)
    for offset in (0x1FFFFC, 0x2000 + 0x80 * 5, 0x200000 + 0x1000 * 9, 0x3FFFFC, 0x1000):
        plic.write(offset, 4, 0xFFFFFFFF)
        plic.read(offset, 4)
    plic.write(0, 4, 7)                      # source 0 does not exist
    plic.set_irq(0, True)
    plic.set_irq(1000, True)
    assert claim(plic, M0) == 0
    snapshot = plic.save()
    other, _ = make(1)
    other.restore(snapshot)
    assert other.save() == snapshot


def test_csrs_on_mip_does_not_latch_the_plic_line():
    """M-mode's csrs mip (OpenSBI setting STIP) while the PLIC holds SEIP high must
    not make SEIP stick once the line drops (privileged spec 3.1.9)."""
    from hartvm.cpu.system import system
    state = np.zeros(L.STATE_SIZE, dtype=np.int64)
    state[L.PRIV] = 3
    state[5] = L.MIP_STIP
    state[L.SEIP_LINE] = 1
    csrs_mip_t0 = (0x344 << 20) | (5 << 15) | (2 << 12) | 0x73
    system(state, csrs_mip_t0, 0x1000, 4)
    assert state[L.CSR + L.MIP] & L.MIP_STIP
    state[L.SEIP_LINE] = 0
    assert not state[L.CSR + L.MIP] & L.MIP_SEIP


def test_edge_source_stays_pending_until_claimed_and_is_not_re_pended():
    plic, states = make(1)
    plic.write(4 * 12, 4, 1)
    enable(plic, S0, 12)
    plic.pulse(12)
    assert states[0][L.SEIP_LINE] == 1 and plic.read(0x1000, 4) == 1 << 12
    assert claim(plic, S0) == 12
    plic.write(0x200004 + 0x1000 * S0, 4, 12)   # complete: no level, so nothing pends
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0
    plic.pulse(12)
    assert claim(plic, S0) == 12
    plic.pulse(12)                              # an edge while in service is kept...
    assert states[0][L.SEIP_LINE] == 0
    plic.write(0x200004 + 0x1000 * S0, 4, 12)   # ...and pends the source at completion
    assert claim(plic, S0) == 12
    plic.write(0x200004 + 0x1000 * S0, 4, 12)
    assert claim(plic, S0) == 0
    plic.pulse(0)
    plic.pulse(1000)                            # no such sources: ignored
    assert claim(plic, S0) == 0
