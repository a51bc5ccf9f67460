"""PMP (privileged spec 3.7): TOR, NA4 and NAPOT entries, R/W/X per access kind,
the lowest matching entry deciding, partial matches, locked entries binding
M-mode, S/U-mode denied where no entry matches, the page-table walk checked.

Each snippet sets PMP entries in M-mode, drops to S- or U-mode (satp Bare
unless the test maps pages) at label 2, and runs the body there; the first
trap lands at label 3 in M-mode, which records mcause/mepc/mtval in
s9/s10/s11. A body that runs to its end makes an ecall (s8 = 1 first).
"""

import pytest

from hartvm.cpu import layout as L
from test_mmu import DATA, PageTables, R, W, X, A, D

MCAUSE, MEPC, MTVAL = 25, 26, 27
DONE, ENTRY = 24, 23          # s8: the body ran to its end; s7: the address of label 2
REGION = 0x8010_0000          # the 4 KiB the entries under test cover
OFF, TOR, NA4, NAPOT = 0, 1 << 3, 2 << 3, 3 << 3
PR, PW, PX, LOCK = 1, 2, 4, 0x80
ALL_RWX = ((1 << 54) - 1, NAPOT | PR | PW | PX)   # OpenSBI's last entry: all memory


def napot(base, size):
    return (base >> 2) | ((size >> 3) - 1)


def pmp_setup(entries):
    """Assembly writing (pmpaddr value, cfg byte) to entries 0, 1, ... (pmpcfg0 last)."""
    code, cfg = "", 0
    for i, (address, config) in enumerate(entries):
        code += f"    li t0, {address}\n    csrw pmpaddr{i}, t0\n"
        cfg |= config << (8 * i)
    return code + f"    li t0, {cfg}\n    csrw pmpcfg0, t0\n"


def run(asm_program, entries, body, mode="S", satp=None, prologue=""):
    """Set the PMP ``entries``, run ``prologue`` in M-mode, then ``body`` in ``mode``."""
    mpp = {"S": 0x800, "U": 0, "M": 0x1800}[mode]
    machine = asm_program(pmp_setup(entries) + prologue + f"""
    la t0, 3f
    csrw mtvec, t0
    li t0, 0x1800
    csrc mstatus, t0
    li t0, {mpp}
    csrs mstatus, t0
    csrw satp, s1
    la s7, 2f
    csrw mepc, s7
    mret
2:
{body}
    li s8, 1
    ecall
    .align 2
3:  csrr s9, mcause
    csrr s10, mepc
    csrr s11, mtval
    csrw satp, zero
""")
    hart = machine.harts[0]
    if satp is not None:
        hart.set_x(9, satp(machine))
    machine.run(max_instructions=100_000)
    return hart


def trap(hart):
    return hart.x(MCAUSE), hart.x(MTVAL)


@pytest.mark.parametrize("mode", ["S", "U"])
def test_no_entry_denies_supervisor_and_user_modes(asm_program, mode):
    hart = run(asm_program, [], "    nop", mode=mode)
    assert trap(hart) == (L.CAUSE_FETCH_ACCESS, hart.x(ENTRY)) and hart.x(MEPC) == hart.x(ENTRY)


def test_no_entry_lets_machine_mode_do_anything(asm_program):
    hart = run(asm_program, [], f"    li a0, {REGION}\n    sd a0, 0(a0)\n    ld a2, 0(a0)", mode="M")
    assert hart.x(DONE) == 1 and hart.x(MCAUSE) == L.CAUSE_ECALL_M and hart.x(12) == REGION


def test_tor_read_only_range(asm_program):
    top = REGION + 0x800          # ends inside a page: the page cannot be cached whole
    entries = [(REGION >> 2, OFF), (top >> 2, TOR | PR), ALL_RWX]
    hart = run(asm_program, entries, f"""
    li a0, {REGION}
    ld a2, 8(a0)          /* inside, R: allowed */
    ld a3, -8(a0)         /* below: the last entry */
    lw a4, 0x7fc(a0)      /* the last word of the range */
    sd a2, 8(a0)          /* W: store access fault */
""")
    assert trap(hart) == (L.CAUSE_STORE_ACCESS, REGION + 8) and hart.x(DONE) == 0
    hart = run(asm_program, entries, f"    li a0, {top - 4}\n    ld a2, 0(a0)")
    assert trap(hart) == (L.CAUSE_LOAD_ACCESS, top - 4)       # 4 bytes in, 4 out: partial
    hart = run(asm_program, entries, f"    li a0, {top}\n    ld a2, 0(a0)\n    sd a2, 0(a0)")
    assert hart.x(DONE) == 1                                  # above: the last entry


def test_tor_with_bottom_not_below_top_matches_nothing(asm_program):
    entries = [(REGION >> 2, OFF), (REGION >> 2, TOR), ALL_RWX]
    hart = run(asm_program, entries, f"    li a0, {REGION}\n    sd a0, 0(a0)")
    assert hart.x(DONE) == 1


def test_na4_entry(asm_program):
    entries = [((REGION + 16) >> 2, NA4 | PR), ALL_RWX]
    hart = run(asm_program, entries, f"""
    li a0, {REGION + 16}
    lw a2, 0(a0)
    lw a3, 4(a0)
    sw a3, 4(a0)
    ld a4, -8(a0)
    sw a2, 0(a0)
""")
    assert trap(hart) == (L.CAUSE_STORE_ACCESS, REGION + 16)
    hart = run(asm_program, entries, f"    li a0, {REGION + 16}\n    ld a2, 0(a0)")
    assert trap(hart) == (L.CAUSE_LOAD_ACCESS, REGION + 16)   # 8 bytes over a 4-byte entry


def test_napot_entry_permissions_per_access_kind(asm_program):
    entries = [(napot(REGION, 4096), NAPOT | PX), ALL_RWX]
    hart = run(asm_program, entries, f"    li a0, {REGION + 0xff8}\n    ld a2, 0(a0)")
    assert trap(hart) == (L.CAUSE_LOAD_ACCESS, REGION + 0xFF8)
    hart = run(asm_program, entries, f"    li a0, {REGION - 8}\n    ld a2, 0(a0)\n    sd a2, 0(a0)")
    assert hart.x(DONE) == 1
    # The snippet's own code: readable and writable, not executable from S-mode.
    code = [(napot(0x8000_0000, 64 << 10), NAPOT | PR | PW), ALL_RWX]
    hart = run(asm_program, code, "    nop")
    assert trap(hart) == (L.CAUSE_FETCH_ACCESS, hart.x(ENTRY))


@pytest.mark.parametrize("first, second, stored", [
    (NAPOT | PR, NAPOT | PR | PW, False),
    (NAPOT | PR | PW, NAPOT | PR, True),
])
def test_lowest_numbered_matching_entry_decides(asm_program, first, second, stored):
    # Entry 0 covers 4 KiB, entry 1 the 8 KiB around it.
    entries = [(napot(REGION, 4096), first), (napot(REGION, 8192), second), ALL_RWX]
    hart = run(asm_program, entries, f"    li a0, {REGION + 64}\n    sd a0, 0(a0)")
    assert hart.x(DONE) == int(stored)
    if not stored:
        assert trap(hart) == (L.CAUSE_STORE_ACCESS, REGION + 64)


def test_partial_match_fails_even_in_machine_mode(asm_program):
    entries = [((REGION + 16) >> 2, NA4 | PR | PW)]      # unlocked: M is not bound by its bits
    hart = run(asm_program, entries, f"    li a0, {REGION + 16}\n    sw a0, 0(a0)\n"
               f"    sd a0, 0(a0)", mode="M")
    assert trap(hart) == (L.CAUSE_STORE_ACCESS, REGION + 16) and hart.x(DONE) == 0


def test_locked_entry_binds_machine_mode_and_refuses_writes(asm_program):
    hart = run(asm_program, [(napot(REGION, 4096), NAPOT | PR)], f"""
    li a0, {REGION}
    sd a0, 0(a0)          /* unlocked: M-mode ignores R-only */
    ld a2, 0(a0)          /* the page is in the TLB now */
    li t0, {NAPOT | PR | LOCK}
    csrw pmpcfg0, t0      /* lock it: the TLB is flushed */
    li t0, {NAPOT | PR | PW | PX}
    csrw pmpcfg0, t0      /* refused */
    li t0, -1
    csrw pmpaddr0, t0     /* refused */
    csrr s4, pmpcfg0
    csrr s5, pmpaddr0
    ld a3, 8(a0)
    sd a0, 8(a0)
""", mode="M")
    assert trap(hart) == (L.CAUSE_STORE_ACCESS, REGION + 8) and hart.x(12) == REGION
    assert hart.x(20) == NAPOT | PR | LOCK and hart.x(21) == napot(REGION, 4096)


def test_a_page_only_partly_granted_is_checked_on_every_access(asm_program):
    entries = [((REGION + 16) >> 2, NA4), ALL_RWX]       # no access to 4 bytes of the page
    hart = run(asm_program, entries, f"""
    li a0, {REGION}
    ld a2, 8(a0)
    ld a2, 24(a0)
    lw a2, 16(a0)
""")
    assert trap(hart) == (L.CAUSE_LOAD_ACCESS, REGION + 16)


def tables_with_second_level_at(machine, flags):
    """Sv39 tables: identity 1 GiB pages for code and devices, and 0x40001000 -> DATA
    through tables of their own (its last-level table at TABLES + 0x2000)."""
    tables = PageTables(machine.ram, 3)
    tables.map(0x8000_0000, 0x8000_0000, R | W | X | A | D, level=2)
    tables.map(0, 0, R | W | A | D, level=2)
    tables.map(0x4000_1000, DATA, flags | A | D)
    return tables.satp()


@pytest.mark.parametrize("instruction, cause", [
    ("ld a2, 0(a0)", L.CAUSE_LOAD_ACCESS), ("sd a2, 0(a0)", L.CAUSE_STORE_ACCESS),
    ("jr a0", L.CAUSE_FETCH_ACCESS)])
def test_page_table_walk_reads_are_checked(asm_program, instruction, cause):
    """The walk's PTE reads are S-mode loads for PMP: a table PMP denies makes an
    access fault of the original kind (not a page fault), tval the virtual address."""
    table_page = 0x8040_2000
    entries = [(napot(table_page, 4096), NAPOT), ALL_RWX]
    hart = run(asm_program, entries, f"    li a0, 0x40001000\n    {instruction}",
               satp=lambda m: tables_with_second_level_at(m, R | W | X))
    assert trap(hart) == (cause, 0x4000_1000)
    hart = run(asm_program, [ALL_RWX], "    li a0, 0x40001000\n    ld a2, 0(a0)",
               satp=lambda m: tables_with_second_level_at(m, R | W | X))
    assert hart.x(DONE) == 1


def test_translated_address_is_checked_physically(asm_program):
    entries = [(napot(DATA, 4096), NAPOT | PR), ALL_RWX]
    hart = run(asm_program, entries, "    li a0, 0x40001008\n    ld a2, 0(a0)\n    sd a2, 0(a0)",
               satp=lambda m: tables_with_second_level_at(m, R | W))
    assert trap(hart) == (L.CAUSE_STORE_ACCESS, 0x4000_1008)
