"""Address translation (Bare, Sv39, Sv48, Sv57) and guest RAM access from inside the run loop.

``translate`` maps a virtual address to a physical one for a fetch, load or
store, following privileged spec 4.3-4.6: the page-table walk, permission
checks with U/SUM/MXR and MPRV, superpage alignment, and the hardware update
of the A and D bits. Walks are cached in a software TLB stored in the hart
state (one direct-mapped table per access kind). A TLB tag holds the whole
page address, the effective privilege and, for loads and stores, SUM and
MXR, so neither privilege changes nor the SUM toggling of every kernel
access to user memory needs a flush; ``tlb_flush`` runs on satp writes and
sfence.vma. A store entry is only made once D is set, so the first store
still walks and sets D.
Guest RAM is one byte buffer seen through four signed views
(``m8``..``m64``); an access wholly inside RAM is done here, anything else
leaves the run loop as an MMIO exit for the bus to handle. The RAM base
is passed down as a plain value rather than read from ``h``: a value read
from ``h`` must be read again after every register write (they might
alias), and this check runs for every load, store and fetch.
"""

from .checks import address_checks, cacheable
from .jit import jit, jit_inline
from .pmp import PMP_R, PMP_W, PMP_X, pmp_check
from .layout import (
    CAUSE_FETCH_ACCESS, CAUSE_FETCH_PAGE, CAUSE_LOAD_ACCESS, CAUSE_LOAD_PAGE,
    CAUSE_STORE_ACCESS, CAUSE_STORE_PAGE, CHECKS, CSR, MSTATUS, MSTATUS_MPP,
    MSTATUS_MPP_SHIFT, MSTATUS_MPRV, MSTATUS_MXR, MSTATUS_SUM, PRIV, PRIV_M,
    PRIV_S, PRIV_U, SATP, TLB, TLB_ENTRIES,
)

ACCESS_FETCH = 0
ACCESS_LOAD = 1
ACCESS_STORE = 2

SATP_MODE_BARE = 0
SATP_MODE_SV39 = 8
SATP_MODE_SV48 = 9
SATP_MODE_SV57 = 10
PPN_MASK = (1 << 44) - 1

PTE_V = 1 << 0
PTE_R = 1 << 1
PTE_W = 1 << 2
PTE_X = 1 << 3
PTE_U = 1 << 4
PTE_A = 1 << 6
PTE_D = 1 << 7
PTE_RESERVED = -(1 << 54)   # bits 63:54 (N, PBMT, reserved): not implemented, must be 0


@jit_inline
def effective_priv(h, access):
    """The privilege a memory access is checked against (MPRV, privileged spec 3.1.6.3)."""
    priv = h[PRIV]
    if access != ACCESS_FETCH and priv == PRIV_M:
        status = h[CSR + MSTATUS]
        if status & MSTATUS_MPRV:
            return (status & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT
    return priv


@jit_inline
def translate(h, m64, ram_base, vaddr, access, size):
    """(paddr, fault cause or -1) for a ``size``-byte access at ``vaddr``; the TLB
    is tried before a walk. In M-mode the address is the physical one, unless a
    check is on (checks.py): then the TLB is tried there too. S/U-mode accesses
    always go through the TLB, also with satp Bare: PMP checks them (pmp.py)."""
    priv = effective_priv(h, access)
    if priv == PRIV_M and h[CHECKS] == 0:
        return vaddr, -1
    satp = h[CSR + SATP]
    slot = TLB + access * 2 * TLB_ENTRIES + ((vaddr >> 12) & (TLB_ENTRIES - 1))
    if h[slot] == tlb_tag(h, vaddr, access, priv):
        return h[slot + TLB_ENTRIES] | (vaddr & 0xFFF), -1
    return slow_translate(h, m64, ram_base, vaddr, access, priv, satp, size)


@jit_inline
def tlb_tag(h, vaddr, access, priv):
    """Page address | SUM, MXR (data accesses) | privilege | valid, in the free low bits."""
    bits = 0
    if access != ACCESS_FETCH:
        bits = (h[CSR + MSTATUS] >> 18) & 3   # mstatus.SUM (bit 18), MXR (bit 19)
    return (vaddr & -4096) | (bits << 3) | (priv << 1) | 1


@jit
def _fault(access):
    if access == ACCESS_FETCH:
        return CAUSE_FETCH_PAGE
    if access == ACCESS_LOAD:
        return CAUSE_LOAD_PAGE
    return CAUSE_STORE_PAGE


@jit
def _access_fault(access):
    if access == ACCESS_FETCH:
        return CAUSE_FETCH_ACCESS
    if access == ACCESS_LOAD:
        return CAUSE_LOAD_ACCESS
    return CAUSE_STORE_ACCESS


@jit
def walk(h, m64, ram_base, vaddr, access, priv, satp):
    """The page-table walk of privileged spec 4.3.2 for Sv39, Sv48 and Sv57
    (3, 4 and 5 levels: QEMU 7.2's get_physical_address, target/riscv/cpu_helper.c):
    (paddr, fault cause or -1, the leaf PTE)."""
    mode = (satp >> 60) & 0xF
    # csr_write stores no other mode; a restored snapshot's satp may hold any
    # (hostile input), which walks as Sv57 rather than past the tables.
    levels = 3 if mode == SATP_MODE_SV39 else 4 if mode == SATP_MODE_SV48 else 5
    va_bits = 12 + 9 * levels
    # The address must be sign-extended from its top valid bit (4.4.1, 4.5.1, 4.6.1).
    top = vaddr >> (va_bits - 1)
    if top != 0 and top != -1:
        return 0, _fault(access), 0
    table = (satp & PPN_MASK) << 12
    ram_words = m64.size
    level = levels - 1
    while True:
        pte_addr = table + ((vaddr >> (12 + 9 * level)) & 511) * 8
        index = (pte_addr - ram_base) >> 3
        if pte_addr < ram_base or index >= ram_words:
            return 0, _access_fault(access), 0   # the table is not in RAM
        # The walk's reads are S-mode loads for PMP (4.3.2 step 2, 3.7.1), as
        # QEMU 7.2's get_physical_address checks them; a failure is an access
        # fault of the original access's kind.
        if not pmp_check(h, pte_addr, 8, PRIV_S)[0] & PMP_R:
            return 0, _access_fault(access), 0
        pte = m64[index]
        if not pte & PTE_V or (not pte & PTE_R and pte & PTE_W) or pte & PTE_RESERVED:
            return 0, _fault(access), 0
        if pte & (PTE_R | PTE_X):
            break
        if level == 0 or pte & (PTE_A | PTE_D | PTE_U):
            return 0, _fault(access), 0           # a pointer must have A, D, U clear
        table = ((pte >> 10) & PPN_MASK) << 12
        level -= 1
    # Leaf: permission checks (4.3.1, 4.3.2 step 5).
    status = h[CSR + MSTATUS]
    if access == ACCESS_FETCH:
        allowed = pte & PTE_X
    elif access == ACCESS_LOAD:
        allowed = pte & PTE_R or (status & MSTATUS_MXR and pte & PTE_X)
    else:
        allowed = pte & PTE_W
    if not allowed:
        return 0, _fault(access), 0
    if pte & PTE_U:
        if priv == PRIV_S and (access == ACCESS_FETCH or not status & MSTATUS_SUM):
            return 0, _fault(access), 0
    elif priv == PRIV_U:
        return 0, _fault(access), 0
    ppn = (pte >> 10) & PPN_MASK
    low_ppn_mask = (1 << (9 * level)) - 1
    if ppn & low_ppn_mask:
        return 0, _fault(access), 0               # misaligned superpage
    # Hardware A/D update (Svadu behaviour, as QEMU does it).
    update = PTE_A | (PTE_D if access == ACCESS_STORE else 0)
    if pte & update != update:
        pte |= update
        m64[index] = pte
    page = ((ppn & ~low_ppn_mask) | ((vaddr >> 12) & low_ppn_mask)) << 12
    return page | (vaddr & 0xFFF), -1, pte


@jit
def slow_translate(h, m64, ram_base, vaddr, access, priv, satp, size):
    """A TLB miss: the address checks that are on (checks.py), the walk, PMP
    (pmp.py), and a TLB entry for the page if no check can fire on it. The
    order is the priority of privileged spec table 3.7: address breakpoints,
    then page faults, then access faults."""
    checks = h[CHECKS]
    if checks:
        cause = address_checks(h, vaddr, size, access)
        if cause >= 0:
            return 0, cause
    if priv == PRIV_M or satp == 0:
        paddr, pte = vaddr, 0
    else:
        paddr, fault, pte = walk(h, m64, ram_base, vaddr, access, priv, satp)
        if fault >= 0:
            return 0, fault
    allowed, page_rights = pmp_check(h, paddr, size, priv)
    need = PMP_X if access == ACCESS_FETCH else access   # ACCESS_LOAD is PMP_R, ACCESS_STORE PMP_W
    if not allowed & need:
        return 0, _access_fault(access)
    if page_rights < 0 or checks and not cacheable(h, vaddr, paddr, access, priv):
        return paddr, -1
    slot = TLB + access * 2 * TLB_ENTRIES + ((vaddr >> 12) & (TLB_ENTRIES - 1))
    h[slot] = tlb_tag(h, vaddr, access, priv)
    h[slot + TLB_ENTRIES] = paddr & -4096
    if access == ACCESS_LOAD and pte & PTE_D and pte & PTE_W and page_rights & PMP_W and \
            (not checks or cacheable(h, vaddr, paddr, ACCESS_STORE, priv)):
        # A later store to this page needs no walk either.
        store_slot = slot + 2 * TLB_ENTRIES
        h[store_slot] = tlb_tag(h, vaddr, ACCESS_STORE, priv)
        h[store_slot + TLB_ENTRIES] = paddr & -4096
    return paddr, -1


@jit_inline
def code_page_cached(h, pc):
    """Is the page of ``pc`` in the fetch TLB? While checks are on, only such a
    page may be the run loop's code page (checks.py)."""
    slot = TLB + ((pc >> 12) & (TLB_ENTRIES - 1))
    return h[slot] == tlb_tag(h, pc, ACCESS_FETCH, h[PRIV])


@jit
def tlb_flush(h):
    for i in range(3 * 2 * TLB_ENTRIES):
        h[TLB + i] = 0


@jit_inline
def ram_offset(m8, ram_base, paddr, size):
    """Offset of ``paddr`` in RAM (``m8`` at ``ram_base``) when the whole access fits, else -1."""
    offset = paddr - ram_base
    if offset < 0 or offset > m8.size - size:
        return -1
    return offset


@jit_inline
def ram_read(m8, m16, m32, m64, offset, size):
    """Sign-extended value of ``size`` bytes at RAM ``offset`` (any alignment)."""
    if offset & (size - 1) == 0:
        if size == 8:
            return m64[offset >> 3]
        if size == 4:
            return m32[offset >> 2]
        if size == 2:
            return m16[offset >> 1]
        return m8[offset]
    # Misaligned accesses are done in hardware, as QEMU does for RAM.
    value = 0
    for i in range(size):
        value |= (m8[offset + i] & 0xFF) << (8 * i)
    shift = 64 - 8 * size
    return (value << shift) >> shift


@jit_inline
def ram_write(m8, m16, m32, m64, offset, size, value):
    """Store the low ``size`` bytes of ``value`` at RAM ``offset`` (any alignment)."""
    if offset & (size - 1) == 0:
        if size == 8:
            m64[offset >> 3] = value
        elif size == 4:
            m32[offset >> 2] = ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
        elif size == 2:
            m16[offset >> 1] = ((value & 0xFFFF) ^ 0x8000) - 0x8000
        else:
            m8[offset] = ((value & 0xFF) ^ 0x80) - 0x80
        return
    for i in range(size):
        m8[offset + i] = (((value >> (8 * i)) & 0xFF) ^ 0x80) - 0x80
