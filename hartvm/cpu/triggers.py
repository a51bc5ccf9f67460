"""Sdtrig: the trigger module of RISC-V Debug spec 1.0, chapter 5, as M-mode sees it.

Two triggers, as QEMU 7.2's (``RV_MAX_TRIGGERS``, target/riscv/debug.c),
selected by ``tselect`` and described by ``tdata1``-``tdata3`` and ``tinfo``.
Each trigger is one of:

* type 2 ``mcontrol`` and type 6 ``mcontrol6`` (5.7.11, 5.7.17): an address
  match on execute, load and/or store in the modes M/S/U it names, with
  ``tdata2`` the address and match 0 (equal: any byte of the access is at
  tdata2), 2 (>=) or 3 (<) (unsigned, on the access's bytes). QEMU 7.2 has
  match 0 only; ``select``, ``chain``, ``size`` and the data match are not
  implemented (size is kept, a trigger matches accesses of any size, as
  size 0 "any" says);
* type 3 ``icount`` (5.7.14): counts the steps (instructions retired and
  exceptions taken) made in the modes it names; when ``count`` reaches 0
  ``pending`` is set, and the trigger fires before the next instruction in
  such a mode;
* type 15: disabled (what a write of type 0 or another type makes; QEMU 7.2
  ignores such writes).

``action`` is 0 (a breakpoint exception, cause 3) in every trigger; writes
of other actions store 0, as QEMU 7.2. The breakpoint's tval is the
address (spec 5.7.17 ``tval`` for address matches; icount: 0); QEMU 7.2
leaves tval 0 for all of them. ``hit`` bits stay 0 (allowed: they are
optional), as in QEMU 7.2; ``tdata3`` (textra) reads 0; ``dmode`` is 0.

The run loop pays for none of this while no trigger is on: address
triggers set CHECK_TRIGGERS in h[CHECKS], so accesses are checked on the
MMU's slow path (checks.py) and the pages of their addresses stay out of
the TLB; an armed icount trigger sets CHECK_ICOUNT, and the run loop then
cuts its blocks at the step where the count runs out (``icount_block``).
"""

from .jit import jit, jit_inline
from .layout import (
    CHECKS, ICOUNT_MARK, ICOUNT_PRIV, INTERRUPT_BIT, PRIV, STEPS, TRIGGER_COUNT, TRIGGERS,
    TSELECT,
)

CHECK_TRIGGERS = 8   # guest bits of h[CHECKS]: an address trigger is on,
CHECK_ICOUNT = 16    # an icount trigger counts or is pending

TSELECT_CSR = 0x7A0
TDATA1 = 0x7A1
TDATA2 = 0x7A2
TDATA3 = 0x7A3
TINFO = 0x7A4

TYPE_MCONTROL = 2
TYPE_ICOUNT = 3
TYPE_MCONTROL6 = 6
TYPE_DISABLED = 15
TINFO_TYPES = (1 << TYPE_MCONTROL) | (1 << TYPE_ICOUNT) | (1 << TYPE_MCONTROL6) | (1 << TYPE_DISABLED)
TDATA1_RESET = TYPE_MCONTROL << 60   # QEMU 7.2's reset value: an mcontrol matching nothing

# Bits software may write, per type (the rest reads 0).
MCONTROL_BITS = (3 << 21) | (3 << 16) | (0xF << 7) | 0x5F    # sizehi, sizelo, match, m s u x w r
MCONTROL6_BITS = (0xF << 16) | (0xF << 7) | 0x5F             # size, match, m s u x w r
ICOUNT_COUNT = 0x3FFF << 10
ICOUNT_PENDING = 1 << 8
ICOUNT_BITS = ICOUNT_COUNT | (1 << 9) | ICOUNT_PENDING | (1 << 7) | (1 << 6)   # count, m, pending, s, u


@jit
def mode_bit(kind, priv):
    """The tdata1 bit that enables a trigger of type ``kind`` in mode ``priv``:
    U, S, M at bits 3, 4, 6 (mcontrol, mcontrol6), 6, 7, 9 (icount)."""
    return 1 << (priv + (6 if kind == TYPE_ICOUNT else 3))


@jit
def triggers_update(h):
    """Set CHECK_TRIGGERS and CHECK_ICOUNT in h[CHECKS] from the triggers (the
    caller flushes the TLB)."""
    checks = h[CHECKS] & ~(CHECK_TRIGGERS | CHECK_ICOUNT)
    for i in range(TRIGGER_COUNT):
        tdata1 = h[TRIGGERS + 3 * i]
        kind = (tdata1 >> 60) & 0xF
        if (kind == TYPE_MCONTROL or kind == TYPE_MCONTROL6) and tdata1 & 0x7 and tdata1 & 0x58:
            checks |= CHECK_TRIGGERS
        elif kind == TYPE_ICOUNT and tdata1 & (ICOUNT_COUNT | ICOUNT_PENDING) and tdata1 & 0x2C0:
            checks |= CHECK_ICOUNT
    h[CHECKS] = checks


@jit
def trigger_read(h, number):
    """tselect, tdata1-3 or tinfo (Debug spec 5.7)."""
    if number == TSELECT_CSR:
        return h[TSELECT]
    if number == TINFO:
        return TINFO_TYPES
    if number == TDATA3:
        return 0
    return h[TRIGGERS + 3 * h[TSELECT] + number - TDATA1]


@jit
def trigger_write(h, number, value):
    """Write tselect, tdata1 or tdata2 (tinfo and tdata3 ignore writes)."""
    if number == TSELECT_CSR:
        if 0 <= value < TRIGGER_COUNT:        # WARL: other values keep tselect (QEMU 7.2)
            h[TSELECT] = value
        return
    slot = TRIGGERS + 3 * h[TSELECT]
    if number == TDATA2:
        h[slot + 1] = value
    elif number == TDATA1:
        kind = (value >> 60) & 0xF
        if kind == TYPE_MCONTROL:
            value &= MCONTROL_BITS
        elif kind == TYPE_MCONTROL6:
            value &= MCONTROL6_BITS
        elif kind == TYPE_ICOUNT:
            value &= ICOUNT_BITS
            # Counting starts after this instruction, which the run loop counts later.
            h[ICOUNT_MARK] = h[STEPS] + 1
            h[ICOUNT_PRIV] = h[PRIV]
        else:
            kind = TYPE_DISABLED
            value = 0
        match = (value >> 7) & 0xF
        if kind != TYPE_ICOUNT and match != 0 and match != 2 and match != 3:
            value &= ~(0xF << 7)              # WARL: unsupported match types read 0
        h[slot] = (kind << 60) | value


@jit_inline
def ltu(a, b):
    """Unsigned a < b (alu.ltu; alu imports trap, which imports this module through checks)."""
    return (a ^ INTERRUPT_BIT) < (b ^ INTERRUPT_BIT)


@jit
def access_hit(tdata1, tdata2, vaddr, size):
    """Does an address trigger match an access of ``size`` bytes at ``vaddr``?"""
    match = (tdata1 >> 7) & 0xF
    last = vaddr + size - 1
    if match == 2:
        return not ltu(last, tdata2)
    if match == 3:
        return ltu(vaddr, tdata2)
    return not ltu(tdata2, vaddr) and not ltu(last, tdata2)


@jit
def trigger_hit(h, vaddr, size, need):
    """Does an address trigger fire on this access? ``need`` is its kind as an
    mcontrol bit: 1 load, 2 store, 4 execute."""
    priv = h[PRIV]
    for i in range(TRIGGER_COUNT):
        tdata1 = h[TRIGGERS + 3 * i]
        kind = (tdata1 >> 60) & 0xF
        if (kind == TYPE_MCONTROL or kind == TYPE_MCONTROL6) and tdata1 & need \
                and tdata1 & mode_bit(kind, priv) \
                and access_hit(tdata1, h[TRIGGERS + 3 * i + 1], vaddr, size):
            return True
    return False


@jit
def trigger_page(h, page, need):
    """May an address trigger for accesses of kind ``need`` fire in the page at ``page``?"""
    for i in range(TRIGGER_COUNT):
        tdata1 = h[TRIGGERS + 3 * i]
        kind = (tdata1 >> 60) & 0xF
        if (kind == TYPE_MCONTROL or kind == TYPE_MCONTROL6) and tdata1 & need and tdata1 & 0x58:
            if (tdata1 >> 7) & 0xF != 0 or h[TRIGGERS + 3 * i + 1] & -4096 == page:
                return True
    return False


@jit
def icount_block(h, limit):
    """Before a block, while CHECK_ICOUNT is on: count the steps made since the
    last block (all in the mode it ran in) against the icount triggers. Returns
    (fire, limit): fire when a pending trigger fires now, before the next
    instruction; else the block's step limit cut to where a count runs out."""
    done = h[STEPS] - h[ICOUNT_MARK]
    ran_in = h[ICOUNT_PRIV]
    priv = h[PRIV]
    fire = False
    for i in range(TRIGGER_COUNT):
        slot = TRIGGERS + 3 * i
        tdata1 = h[slot]
        if (tdata1 >> 60) & 0xF != TYPE_ICOUNT:
            continue
        count = (tdata1 >> 10) & 0x3FFF
        if count > 0 and done > 0 and tdata1 & mode_bit(TYPE_ICOUNT, ran_in):
            count = max(count - done, 0)
            tdata1 = (tdata1 & ~ICOUNT_COUNT) | (count << 10)
            if count == 0:
                tdata1 |= ICOUNT_PENDING      # 5.7.14: pending until a mode it counts in
        if tdata1 & mode_bit(TYPE_ICOUNT, priv):
            if tdata1 & ICOUNT_PENDING:
                tdata1 &= ~ICOUNT_PENDING
                fire = True
            elif count > 0:
                limit = min(limit, count)
        h[slot] = tdata1
    h[ICOUNT_MARK] = h[STEPS]
    h[ICOUNT_PRIV] = priv
    triggers_update(h)
    return fire, limit
