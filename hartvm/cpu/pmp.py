"""Physical memory protection: the checks of privileged spec 3.7 on every physical access.

The pmpcfg/pmpaddr CSRs themselves (WARL values, locking) are in ``csr.py``;
here is what they mean for an access. Sixteen entries, grain 4 bytes (G=0),
as QEMU 7.2's ``virt`` hart. An entry matches an address by its A field:
TOR ``[pmpaddr[i-1] << 2, pmpaddr[i] << 2)``, NA4 the 4 bytes at
``pmpaddr << 2``, NAPOT the naturally aligned power-of-two range that the
trailing ones of pmpaddr encode (3.7.1). Spec 3.7.1's rules, as QEMU 7.2's
``pmp_hart_has_privs`` (target/riscv/pmp.c) applies them:

* the lowest-numbered entry that matches any byte of the access decides;
  if it does not match all of them the access fails, whatever the mode;
* its R/W/X bits bind S- and U-mode, and M-mode only when it is locked (L);
* when no entry matches, M-mode succeeds and S/U-mode fail, also when no
  entry is on at all (QEMU's ``pmp_hart_has_privs_default``: with PMP
  implemented, an S/U access needs an entry granting it).

Where the spec leaves a choice or QEMU departs from it:

* a TOR entry whose bottom is not below its top matches nothing (spec);
  QEMU 7.2 makes it match address 0 (``pmp_update_rule_addr``).
* a fetch is checked for the 2-byte parcels it reads, as the spec's
  per-access rule says; QEMU checks a fetch from its address to the end of
  the page (``size`` 0 in ``pmp_hart_has_privs``), so a fetch near the end of
  an entry that ends inside a page fails there and not here.

``h[CHECKS] & CHECK_PMP`` says whether any entry is on (``pmp_update``
keeps it, after every pmpcfg/pmpaddr write and on restore); while none is,
M-mode accesses are not checked at all (checks.py) and S/U accesses fail.
The TLB keeps a page only when one entry (or the default) decides alike for
all its bytes (``pmp_check``'s second result), QEMU's ``pmp_get_tlb_size``
idea (target/riscv/cpu_helper.c), so the checks cost nothing on TLB hits.
"""

from .jit import jit
from .layout import CHECKS, CSR, PMPADDR0, PMPCFG0, PRIV_M

CHECK_PMP = 4        # a guest bit of h[CHECKS]: some PMP entry has A != OFF

PMP_R = 1            # pmpcfg permission bits; also the access kinds' masks
PMP_W = 2
PMP_X = 4
PMP_RWX = PMP_R | PMP_W | PMP_X
PMP_L = 0x80
PMP_ENTRIES = 16
PMP_TOR = 1
PMP_NA4 = 2
PMP_NAPOT = 3


@jit
def pmp_config(h, entry):
    """The configuration byte of PMP entry 0-15 (pmpcfg0 holds 0-7, pmpcfg2 8-15)."""
    register = h[CSR + PMPCFG0 + 2 * (entry // 8)]
    return (register >> (8 * (entry % 8))) & 0xFF


@jit
def pmp_update(h):
    """Set CHECK_PMP in h[CHECKS] while any entry is on (the caller flushes the TLB)."""
    on = (h[CSR + PMPCFG0] | h[CSR + PMPCFG0 + 2]) & 0x1818181818181818   # the A fields
    if on:
        h[CHECKS] |= CHECK_PMP
    else:
        h[CHECKS] &= ~CHECK_PMP


@jit
def pmp_range(h, entry, config):
    """[start, end) of the addresses entry ``entry`` matches (empty when it is off)."""
    mode = (config >> 3) & 3
    address = h[CSR + PMPADDR0 + entry]
    if mode == PMP_TOR:
        bottom = h[CSR + PMPADDR0 + entry - 1] << 2 if entry > 0 else 0
        return bottom, address << 2
    if mode == PMP_NA4:
        return address << 2, (address << 2) + 4
    if mode == PMP_NAPOT:
        ones = (address << 2) | 3          # pmpaddr holds bits 55:2 (< 2**54): no overflow
        return ones & (ones + 1), (ones | (ones + 1)) + 1
    return 0, 0


@jit
def pmp_check(h, paddr, size, priv):
    """(R/W/X allowed to the ``size`` bytes at ``paddr`` in privilege ``priv``,
    R/W/X allowed alike to every byte of its 4 KiB page, or -1 if not alike)."""
    default = PMP_RWX if priv == PRIV_M else 0
    if not h[CHECKS] & CHECK_PMP:
        return default, default
    page = paddr & -4096
    page_rights = -2                         # no entry has touched the page yet
    for entry in range(PMP_ENTRIES):
        config = pmp_config(h, entry)
        start, end = pmp_range(h, entry, config)
        if start >= end:
            continue
        rights = config & PMP_RWX if priv != PRIV_M or config & PMP_L else PMP_RWX
        if page_rights == -2 and start < page + 4096 and page < end:
            page_rights = rights if start <= page and page + 4096 <= end else -1
        if start < paddr + size and paddr < end:
            if start <= paddr and paddr + size <= end:
                return rights, page_rights
            return 0, page_rights            # a partial match fails (3.7.1)
    return default, default if page_rights == -2 else page_rights
