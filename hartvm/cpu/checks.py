"""Checks on the MMU's slow path: addresses the host watches, PMP and the guest's triggers.

A check that costs something on every access would slow every guest that
never uses it. So, as QEMU flags the TLB entries of watched pages
(TLB_WATCHPOINT, accel/tcg/cputlb.c), checks are made only where the TLB
is missed: ``h[CHECKS]`` says which checks are on, and while any is on,
an access with translation off (M-mode, satp Bare) goes through the TLB
too, and a page goes into the TLB (or becomes the run loop's code page)
only if no check can fire on it. While ``h[CHECKS]`` is 0, nothing
changes on any path but one compare when translation is off.

Watches are the host's: ``Machine.hook_code``/``hook_memory`` and a
debugger's watchpoints put ranges of addresses, as the hart sees them
(virtual when translation is on), in the ``WATCHES`` table of the state
with the kinds of access they watch. An access that touches one leaves
the run loop before it is made (``EXIT_WATCH``); the machine calls the
hooks, then makes the access with the watches off for that one
instruction.

The guest has checks of its own, recomputed from its CSRs whenever they
are written (and on restore, ``csr.guest_checks``): CHECK_PMP while a PMP
entry is on (pmp.py: the physical address is checked after translation,
and a page goes into the TLB only when PMP grants all of it alike), and
CHECK_TRIGGERS while an Sdtrig address trigger is on (triggers.py: a
match is a breakpoint exception, raised before translation). CHECK_ICOUNT
is not an MMU check: it tells the run loop an icount trigger is armed.
"""

from .jit import jit
from .layout import (
    CAUSE_BREAKPOINT, CHECKS, EXIT_FLAGS, EXIT_SIZE, EXIT_VADDR, WATCH_ENTRIES, WATCH_HIT,
    WATCHES,
)
from .triggers import CHECK_TRIGGERS, trigger_hit, trigger_page

CHECK_WATCH = 1      # the host watches addresses (the WATCHES table)
HOST_CHECKS = CHECK_WATCH
# The guest's bits: pmp.CHECK_PMP = 4, triggers.CHECK_TRIGGERS = 8, triggers.CHECK_ICOUNT = 16.


@jit
def watched(h, start, end, access):
    """Does an entry of the WATCHES table watch an ``access`` to [start, end)?"""
    bit = 1 << access
    for i in range(WATCH_ENTRIES):
        slot = WATCHES + 3 * i
        if h[slot + 2] & bit and start < h[slot + 1] and h[slot] < end:
            return True
    return False


@jit
def kind_bit(access):
    """An access kind (mmu.ACCESS_*: fetch 0, load 1, store 2) as an mcontrol
    (and PMP) bit: execute 4, load 1, store 2."""
    return 4 if access == 0 else access


@jit
def address_checks(h, vaddr, size, access):
    """Checks on the address an access uses, before it is translated: WATCH_HIT
    (with the access described in EXIT_VADDR, _SIZE, _FLAGS), CAUSE_BREAKPOINT
    (a trigger fires: before any page or access fault, privileged spec table
    3.7) or -1. The host's watches come first: a debugger sees the access
    before the guest's trigger traps it."""
    checks = h[CHECKS]
    if checks & CHECK_WATCH and watched(h, vaddr, vaddr + size, access):
        h[EXIT_VADDR] = vaddr
        h[EXIT_SIZE] = size
        h[EXIT_FLAGS] = access
        return WATCH_HIT
    if checks & CHECK_TRIGGERS and trigger_hit(h, vaddr, size, kind_bit(access)):
        return CAUSE_BREAKPOINT
    return -1


@jit
def cacheable(h, vaddr, paddr, access, priv):
    """May the page of ``vaddr`` (at ``paddr``) go into the TLB for ``access``,
    so that later accesses to it skip every check?"""
    page = vaddr & -4096
    checks = h[CHECKS]
    if checks & CHECK_WATCH and watched(h, page, page + 4096, access):
        return False
    if checks & CHECK_TRIGGERS and trigger_page(h, page, kind_bit(access)):
        return False
    return True
