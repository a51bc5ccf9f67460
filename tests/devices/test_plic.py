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


def complete(plic, context, source):
    plic.write(0x200004 + 0x1000 * context, 4, source)


def test_a_line_that_stays_high_interrupts_once_until_raised_again():
    """QEMU's gateway (sifive_plic_irq_request): a raise latches the source; a
    completion makes nothing pending, however long the line stays high."""
    plic, states = make()
    plic.write(4 * 10, 4, 1)
    enable(plic, S0, 10)
    plic.set_irq(10, True)
    assert claim(plic, S0) == 10
    assert states[0][L.SEIP_LINE] == 0 and plic.read(0x1000, 4) == 0
    complete(plic, S0, 10)                      # the line is still high
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0
    plic.set_irq(10, True)                      # raised again
    assert states[0][L.SEIP_LINE] == 1 and claim(plic, S0) == 10


def test_a_raise_while_claimed_latches_and_is_offered_after_completion():
    plic, states = make()
    plic.write(4 * 10, 4, 1)
    enable(plic, S0, 10)
    plic.set_irq(10, True)
    assert claim(plic, S0) == 10
    plic.set_irq(10, True)
    assert plic.read(0x1000, 4) == 1 << 10      # pending, and claimed...
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0   # ...so not offered
    complete(plic, S0, 10)
    assert states[0][L.SEIP_LINE] == 1 and claim(plic, S0) == 10
    complete(plic, S0, 10)
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0


def test_lowering_a_line_does_not_take_back_a_latched_request():
    """QEMU commit a84be2baa9ec, in the QEMU 7.2 hartvm is measured against."""
    plic, states = make()
    plic.write(4 * 10, 4, 1)
    enable(plic, M0, 10)
    plic.set_irq(10, True)
    plic.set_irq(10, False)
    assert plic.read(0x1000, 4) == 1 << 10 and states[0][L.CSR + L.MIP] & L.MIP_MEIP
    assert claim(plic, M0) == 10
    plic.set_irq(10, False)
    complete(plic, M0, 10)
    assert claim(plic, M0) == 0


def test_a_completion_ends_the_claim_wherever_it_comes_from():
    """QEMU's sifive_plic_write ends the claim of any source below num_sources,
    enabled for the completing context or not."""
    plic, states = make()
    plic.write(4 * 10, 4, 1)
    enable(plic, S0, 10)
    plic.set_irq(10, True)
    assert claim(plic, S0) == 10
    plic.set_irq(10, True)
    plic.write(0x2000 + 0x80 * S0, 4, 0)       # disabled...
    complete(plic, M1, 10)                      # ...and completed by another context
    enable(plic, S0, 10)
    assert claim(plic, S0) == 10
    for hostile in (0, 95, 96, 0xFFFFFFFF):
        complete(plic, S0, hostile)
    assert claim(plic, S0) == 0


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


def test_a_pulse_is_a_raise_no_line_lowers():
    plic, states = make(1)
    plic.write(4 * 12, 4, 1)
    enable(plic, S0, 12)
    plic.pulse(12)
    assert states[0][L.SEIP_LINE] == 1 and plic.read(0x1000, 4) == 1 << 12
    assert claim(plic, S0) == 12
    complete(plic, S0, 12)                      # nothing pends again by itself
    assert states[0][L.SEIP_LINE] == 0 and claim(plic, S0) == 0
    plic.pulse(12)
    assert claim(plic, S0) == 12
    plic.pulse(12)                              # a pulse while claimed is kept...
    assert states[0][L.SEIP_LINE] == 0
    complete(plic, S0, 12)                      # ...and offered at completion
    assert claim(plic, S0) == 12
    complete(plic, S0, 12)
    assert claim(plic, S0) == 0
    plic.pulse(0)
    plic.pulse(1000)                            # no such sources: ignored
    assert claim(plic, S0) == 0
