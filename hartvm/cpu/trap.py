"""Trap entry, trap return and interrupt selection (privileged spec 3.1.7-3.1.9, 3.3.2, 4.1).

Every function here works on the hart's state array ``h`` (see ``layout``)
and returns the pc at which the hart continues, with bit 0 set: a trap or a
trap return changes the privilege and maybe the address space, so the run
loop must end its block (and forget its cached code page).
"""

from .jit import jit

from .layout import (
    TRAP_EXITS, EXIT_FLAGS, EXIT_PADDR, EXIT_REASON, EXIT_TRAP, EXIT_VADDR, EXIT_VALUE, EXIT_WATCH,
    WATCH_HIT, CSR, INTERRUPT_BIT, MCAUSE, MEDELEG, MEPC, MIDELEG, MIE, MIP, MSTATUS,
    MSTATUS_MIE, MSTATUS_MPIE, MSTATUS_MPP, MSTATUS_MPP_SHIFT, MSTATUS_MPRV,
    MSTATUS_SIE, MSTATUS_SPIE, MSTATUS_SPP, MTVAL, MTVEC, PRIV, PRIV_M, PRIV_S,
    PRIV_U, SCAUSE, SEPC, STVAL, STVEC, IRQ_MEI, IRQ_MSI, IRQ_MTI, IRQ_SEI,
    IRQ_SSI, IRQ_STI, RESERVATION, INSTRET, MIP_SEIP, SEIP_LINE,
)


@jit
def take_trap(h, cause, tval, pc, interrupt):
    """Enter the trap handler for ``cause`` raised at ``pc``; return the handler's pc."""
    if cause == WATCH_HIT:
        # Not a trap: an access the host watches (checks.py), left for the machine to serve.
        h[EXIT_REASON] = EXIT_WATCH
        return pc | 1
    priv = h[PRIV]
    if not interrupt:
        h[INSTRET] -= 1  # the run loop counts every step; a trapping one does not retire
    delegated = h[CSR + (MIDELEG if interrupt else MEDELEG)]
    mcause = cause | INTERRUPT_BIT if interrupt else cause
    status = h[CSR + MSTATUS]
    h[RESERVATION] = -1
    if priv <= PRIV_S and (delegated >> cause) & 1:
        h[CSR + SCAUSE] = mcause
        h[CSR + SEPC] = pc
        h[CSR + STVAL] = tval
        status &= ~(MSTATUS_SPP | MSTATUS_SPIE)
        if status & MSTATUS_SIE:
            status |= MSTATUS_SPIE
        if priv == PRIV_S:
            status |= MSTATUS_SPP
        h[CSR + MSTATUS] = status & ~MSTATUS_SIE
        h[PRIV] = PRIV_S
        tvec = h[CSR + STVEC]
    else:
        h[CSR + MCAUSE] = mcause
        h[CSR + MEPC] = pc
        h[CSR + MTVAL] = tval
        status &= ~(MSTATUS_MPP | MSTATUS_MPIE)
        if status & MSTATUS_MIE:
            status |= MSTATUS_MPIE
        status |= priv << MSTATUS_MPP_SHIFT
        h[CSR + MSTATUS] = status & ~MSTATUS_MIE
        h[PRIV] = PRIV_M
        tvec = h[CSR + MTVEC]
    if h[TRAP_EXITS]:
        # The host hooks traps (Machine.hook_trap): leave the run loop in the handler.
        h[EXIT_REASON] = EXIT_TRAP
        h[EXIT_VALUE] = mcause
        h[EXIT_VADDR] = tval
        h[EXIT_PADDR] = pc
        h[EXIT_FLAGS] = priv
    base = tvec & ~3
    if interrupt and (tvec & 3) == 1:  # vectored mode
        return (base + 4 * cause) | 1
    return base | 1


@jit
def mret(h):
    """Return from an M-mode trap: restore privilege and MIE from mstatus."""
    status = h[CSR + MSTATUS]
    new_priv = (status & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT
    status &= ~(MSTATUS_MIE | MSTATUS_MPP)
    if status & MSTATUS_MPIE:
        status |= MSTATUS_MIE
    status |= MSTATUS_MPIE  # MPP is set to U, the least-privileged mode
    if new_priv != PRIV_M:
        status &= ~MSTATUS_MPRV
    h[CSR + MSTATUS] = status
    h[PRIV] = new_priv
    h[RESERVATION] = -1
    return h[CSR + MEPC] | 1


@jit
def sret(h):
    """Return from an S-mode trap: restore privilege and SIE from sstatus."""
    status = h[CSR + MSTATUS]
    new_priv = PRIV_S if status & MSTATUS_SPP else PRIV_U
    status &= ~(MSTATUS_SIE | MSTATUS_SPP | MSTATUS_MPRV)
    if status & MSTATUS_SPIE:
        status |= MSTATUS_SIE
    status |= MSTATUS_SPIE
    h[CSR + MSTATUS] = status
    h[PRIV] = new_priv
    h[RESERVATION] = -1
    return h[CSR + SEPC] | 1


@jit
def _highest(pending):
    # Priority order of simultaneous interrupts: privileged spec 3.1.9.
    if pending & (1 << IRQ_MEI):
        return IRQ_MEI
    if pending & (1 << IRQ_MSI):
        return IRQ_MSI
    if pending & (1 << IRQ_MTI):
        return IRQ_MTI
    if pending & (1 << IRQ_SEI):
        return IRQ_SEI
    if pending & (1 << IRQ_SSI):
        return IRQ_SSI
    if pending & (1 << IRQ_STI):
        return IRQ_STI
    return -1


@jit
def effective_mip(h):
    """mip as software reads it: SEIP is the OR of the written bit and the PLIC line (3.1.9)."""
    return h[CSR + MIP] | (MIP_SEIP if h[SEIP_LINE] else 0)


@jit
def pending_interrupt(h):
    """The interrupt the hart must take now, or -1 (privileged spec 3.1.9)."""
    pending = effective_mip(h) & h[CSR + MIE]
    if pending == 0:
        return -1
    priv = h[PRIV]
    status = h[CSR + MSTATUS]
    delegated = h[CSR + MIDELEG]
    m_pending = pending & ~delegated
    if m_pending and (priv < PRIV_M or status & MSTATUS_MIE):
        return _highest(m_pending)
    s_pending = pending & delegated
    if s_pending and (priv < PRIV_S or (priv == PRIV_S and status & MSTATUS_SIE)):
        return _highest(s_pending)
    return -1
