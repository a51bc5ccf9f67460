"""Sv39, Sv48 and Sv57: page-table walks, every page-fault kind, A/D updates, SUM/MXR/MPRV.

Page tables are written into guest RAM from Python (an independent
implementation of the PTE format of privileged spec 4.3-4.5); the snippet
sets satp and drops to S-mode (or U-mode), where it makes the accesses
under test. Traps go to the M-mode handler of the test template, which
records mcause/mepc/mtval in s9/s10/s11 and skips the instruction.
"""

import pytest

from conftest import PMP_ALLOW_ALL
from hartvm.cpu import layout as L

V, R, W, X, U, G, A, D = (1 << i for i in range(8))
TABLES = 0x8040_0000       # physical pages for the page tables
DATA = 0x8080_0000         # physical frames that test pages map to
MCAUSE, MEPC, MTVAL = 25, 26, 27
# For fetch faults: a handler at label 3 that records the trap and goes on in M-mode
# (the template's handler would read the instruction at the faulting address).
M_HANDLER = "    la t0, 3f\n    csrw mtvec, t0\n"
# Jump to a0; that handler records mcause, mepc and mtval in s9-s11.
JUMP_TO_A0 = """    jr a0
    .align 2
3:  csrr s9, mcause
    csrr s10, mepc
    csrr s11, mtval
"""


class PageTables:
    def __init__(self, ram, levels, base=TABLES):
        self.ram = ram
        self.levels = levels
        self.next_page = base
        self.root = self._new_table()

    def _new_table(self):
        page = self.next_page
        self.next_page += 4096
        self.ram.write(page, bytes(4096))
        return page

    def map(self, vaddr, paddr, flags, level=0):
        """Map one page (level 0: 4 KiB, 1: 2 MiB, 2: 1 GiB, 3: 512 GiB, 4: 256 TiB)
        with a leaf PTE of ``flags``."""
        table = self.root
        for current in range(self.levels - 1, level, -1):
            entry = table + ((vaddr >> (12 + 9 * current)) & 511) * 8
            pte = self.ram.read_u64(entry)
            if not pte & V:
                pte = (self._new_table() >> 12) << 10 | V
                self.ram.write_u64(entry, pte)
            table = (pte >> 10) << 12
        entry = table + ((vaddr >> (12 + 9 * level)) & 511) * 8
        self.ram.write_u64(entry, (paddr >> 12) << 10 | flags | V)
        return entry

    def satp(self):
        mode = {3: 8, 4: 9, 5: 10}[self.levels]     # Sv39, Sv48, Sv57
        return (mode << 60) | (self.root >> 12)


def enter(mode="S", mstatus_bits=0):
    """Code that sets satp (from s1) and continues at label 2 in S- or U-mode."""
    mpp = {"S": 0x800, "U": 0}[mode]
    return PMP_ALLOW_ALL + f"""
    csrw satp, s1
    sfence.vma
    li t0, 0x1800
    csrc mstatus, t0
    li t0, {mpp | mstatus_bits}
    csrs mstatus, t0
    la t0, 2f
    csrw mepc, t0
    mret
2:
"""


def run(asm_program, body, levels=3, setup=None, mode="S", mstatus_bits=0, registers=None,
        prologue=""):
    """Run ``prologue`` in M-mode, then ``body`` in ``mode`` with fresh page tables."""
    machine = asm_program(prologue + enter(mode, mstatus_bits) + body, memory=16 << 20)
    tables = PageTables(machine.ram, levels)
    # The snippet's code and data: identity-mapped by one 1 GiB page.
    flags = R | W | X | A | D | (U if mode == "U" else 0)
    tables.map(0x8000_0000, 0x8000_0000, flags, level=2)
    # Devices (the test finisher that ends the run): identity-mapped too.
    tables.map(0, 0, flags & ~X, level=2)
    if setup:
        setup(tables)
    machine.harts[0].set_x(9, tables.satp())     # s1
    for index, value in (registers(tables) if registers else {}).items():
        machine.harts[0].set_x(index, value)
    machine.run(max_instructions=100_000)
    return machine, tables


def test_translated_load_store(asm_program):
    machine, _ = run(asm_program, """
    li a0, 0x40001000
    li a1, 0x1234
    sd a1, 8(a0)
    ld a2, 8(a0)
    """, setup=lambda t: t.map(0x4000_1000, DATA, R | W | A | D))
    hart = machine.harts[0]
    assert hart.x(12) == 0x1234
    assert machine.ram.read_u64(DATA + 8) == 0x1234   # it went to the mapped frame
    assert hart.x(MCAUSE) == 2**64 - 1                 # no trap


@pytest.mark.parametrize("levels", [3, 4, 5])
def test_load_page_fault_on_unmapped_address(asm_program, levels):
    machine, _ = run(asm_program, "    li a0, 0x40005000\n    ld a2, 16(a0)", levels=levels)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == L.CAUSE_LOAD_PAGE and hart.x(MTVAL) == 0x40005010


def test_store_page_fault_on_read_only_page(asm_program):
    machine, _ = run(asm_program, "    li a0, 0x40001000\n    li a2, 7\n    sw a2, 0(a0)",
                     setup=lambda t: t.map(0x4000_1000, DATA, R | A | D))
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == L.CAUSE_STORE_PAGE and hart.x(MTVAL) == 0x40001000


def test_amo_on_read_only_page_is_store_fault(asm_program):
    machine, _ = run(asm_program, "    li a0, 0x40001000\n    amoadd.d a2, a1, (a0)",
                     setup=lambda t: t.map(0x4000_1000, DATA, R | A | D))
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_STORE_PAGE


def test_fetch_page_fault_on_non_executable_page(asm_program):
    machine, _ = run(asm_program, """
    li a0, 0x40001000
""" + JUMP_TO_A0, setup=lambda t: t.map(0x4000_1000, DATA, R | W | A | D), prologue=M_HANDLER)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == L.CAUSE_FETCH_PAGE
    assert hart.x(MEPC) == 0x40001000 and hart.x(MTVAL) == 0x40001000


def test_hardware_sets_accessed_and_dirty(asm_program):
    entries = {}

    def setup(tables):
        entries["read"] = tables.map(0x4000_1000, DATA, R | W)
        entries["written"] = tables.map(0x4000_2000, DATA + 0x1000, R | W)
        entries["untouched"] = tables.map(0x4000_3000, DATA + 0x2000, R | W)

    machine, _ = run(asm_program, """
    li a0, 0x40001000
    ld a2, 0(a0)
    li a0, 0x40002000
    sd a2, 0(a0)
    """, setup=setup)
    pte = {name: machine.ram.read_u64(entry) for name, entry in entries.items()}
    assert pte["read"] & A and not pte["read"] & D
    assert pte["written"] & A and pte["written"] & D
    assert not pte["untouched"] & (A | D)


def test_store_after_load_walks_again_to_set_dirty(asm_program):
    entries = {}
    machine, _ = run(asm_program, """
    li a0, 0x40001000
    ld a2, 0(a0)            /* A set, D clear: the TLB entry is read-only */
    sd a2, 8(a0)            /* must walk again and set D */
    """, setup=lambda t: entries.setdefault("pte", t.map(0x4000_1000, DATA, R | W)))
    assert machine.ram.read_u64(entries["pte"]) & D


def test_supervisor_access_to_user_page_needs_sum(asm_program):
    body = """
    li a0, 0x40001000
    li a2, 0
    ld a2, 0(a0)
    """

    def setup(tables):
        tables.map(0x4000_1000, DATA, R | W | U | A | D)
        tables.ram.write_u64(DATA, 99)

    machine, _ = run(asm_program, body, setup=setup)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE and machine.harts[0].x(12) == 0
    machine, _ = run(asm_program, body, setup=setup, mstatus_bits=L.MSTATUS_SUM)
    assert machine.harts[0].x(12) == 99


def test_supervisor_never_executes_user_pages(asm_program):
    machine, _ = run(asm_program, """
    li a0, 0x40001000
    jr a0
    .align 2
3:  csrr s9, mcause
    """, setup=lambda t: t.map(0x4000_1000, DATA, R | X | U | A | D),
        mstatus_bits=L.MSTATUS_SUM, prologue=M_HANDLER)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_FETCH_PAGE


def test_user_mode_cannot_touch_supervisor_pages(asm_program):
    machine, _ = run(asm_program, "    li a0, 0x40001000\n    ld a2, 0(a0)",
                     setup=lambda t: t.map(0x4000_1000, DATA, R | W | A | D), mode="U")
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE


def test_mxr_makes_executable_pages_readable(asm_program):
    body = "    li a0, 0x40001000\n    li a2, 0\n    ld a2, 0(a0)"

    def setup(tables):
        tables.map(0x4000_1000, DATA, X | A | D)
        tables.ram.write_u64(DATA, 5)

    machine, _ = run(asm_program, body, setup=setup)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE
    machine, _ = run(asm_program, body, setup=setup, mstatus_bits=L.MSTATUS_MXR)
    assert machine.harts[0].x(12) == 5


@pytest.mark.parametrize("vaddr", [0x40_0000_0000, 0xFFFF_FFC0_0000_0000 - 0x1000])
def test_non_canonical_address_faults(asm_program, vaddr):
    machine, _ = run(asm_program, f"    li a0, {vaddr}\n    ld a2, 0(a0)")
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == L.CAUSE_LOAD_PAGE and hart.x(MTVAL) == vaddr


def test_misaligned_superpage_faults(asm_program):
    machine, _ = run(asm_program, "    li a0, 0x40200000\n    ld a2, 0(a0)",
                     setup=lambda t: t.map(0x4020_0000, DATA + 0x1000, R | W | A | D, level=1))
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE


def test_megapage_maps_offsets_within_it(asm_program):
    def setup(tables):
        tables.map(0x4020_0000, 0x8060_0000, R | W | A | D, level=1)
        tables.ram.write_u64(0x8060_0000 + 0x12348, 0x77)

    machine, _ = run(asm_program, "    li a0, 0x40212348\n    ld a2, 0(a0)", setup=setup)
    assert machine.harts[0].x(12) == 0x77


def test_misaligned_load_across_pages_to_separate_frames(asm_program):
    def setup(tables):
        tables.map(0x4000_1000, DATA + 0x5000, R | W | A | D)
        tables.map(0x4000_2000, DATA + 0x1000, R | W | A | D)
        tables.ram.write(DATA + 0x5FFC, bytes([1, 2, 3, 4]))
        tables.ram.write(DATA + 0x1000, bytes([5, 6, 7, 8]))

    machine, _ = run(asm_program, "    li a0, 0x40001ffc\n    ld a2, 0(a0)", setup=setup)
    assert machine.harts[0].x(12) == 0x0807060504030201


def test_misaligned_store_across_pages_faults_before_writing(asm_program):
    def setup(tables):
        tables.map(0x4000_1000, DATA + 0x5000, R | W | A | D)
        tables.map(0x4000_2000, DATA + 0x1000, R | A | D)  # second page read-only

    machine, _ = run(asm_program, "    li a0, 0x40001ffc\n    li a1, -1\n    sd a1, 0(a0)",
                     setup=setup)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_STORE_PAGE
    assert machine.ram.read(DATA + 0x5FFC, 4) == bytes(4)


def test_sfence_vma_makes_a_changed_mapping_visible(asm_program):
    def setup(tables):
        tables.map(0x4000_1000, DATA, R | W | A | D)
        tables.ram.write_u64(DATA, 1)
        tables.ram.write_u64(DATA + 0x1000, 2)

    def registers(tables):
        # s2: the PTE of 0x40001000, s3: a PTE pointing at the next frame
        pte_address = tables.map(0x4000_1000, DATA, R | W | A | D)
        return {18: pte_address, 19: ((DATA + 0x1000) >> 12) << 10 | R | W | A | D | V}

    machine, _ = run(asm_program, """
    li a0, 0x40001000
    ld a3, 0(a0)             /* 1, and now cached */
    sd s3, 0(s2)             /* remap (the tables are reachable through the identity map) */
    sfence.vma
    ld a4, 0(a0)             /* 2 */
    """, setup=setup, registers=registers)
    hart = machine.harts[0]
    assert (hart.x(13), hart.x(14)) == (1, 2)


def test_mprv_translates_machine_mode_loads(asm_program):
    machine = asm_program(PMP_ALLOW_ALL + """
    csrw satp, s1
    li t0, 0x1800
    csrc mstatus, t0
    li t0, 0x800 | 0x20000   /* MPP = S, MPRV */
    csrs mstatus, t0
    li a0, 0x40001000
    ld a2, 0(a0)
    li t0, 0x20000
    csrc mstatus, t0
    """)
    tables = PageTables(machine.ram, 3)
    tables.map(0x8000_0000, 0x8000_0000, R | W | X | A | D, level=2)
    tables.map(0x4000_1000, DATA, R | A | D)
    machine.ram.write_u64(DATA, 42)
    machine.harts[0].set_x(9, tables.satp())
    machine.run(max_instructions=10_000)
    assert machine.harts[0].x(12) == 42 and machine.harts[0].priv == L.PRIV_M


def test_satp_keeps_only_supported_modes(asm_program):
    machine = asm_program("""
    li a0, (8 << 60) | 0x80400
    csrw satp, a0
    csrr a2, satp
    li a0, (10 << 60) | 0x80401  /* Sv57, as QEMU 7.2 (target/riscv/csr.c valid_vm_1_10_64) */
    csrw satp, a0
    csrr a3, satp
    li a0, (11 << 60) | 0x123    /* Sv64: not supported, the write is ignored */
    csrw satp, a0
    csrr a4, satp
    csrw satp, zero
    """)
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.x(12) == (8 << 60) | 0x80400
    assert hart.x(13) == hart.x(14) == (10 << 60) | 0x80401


# Sv57 (privileged spec 4.6): addresses that only five levels can translate,
# above Sv48's 2^47 and below -2^47; the root table is indexed by bits 56:48.
SV57_LOW = 0x00AB_CDEF_1234_5000      # bit 56 clear, bits 55:47 not all clear
SV57_HIGH = 0xFFAB_CDEF_1234_6000     # bits 63:56 set, bits 55:47 not all set


@pytest.mark.parametrize("vaddr", [SV57_LOW, SV57_HIGH], ids=hex)
def test_sv57_translates_addresses_beyond_sv48(asm_program, vaddr):
    def setup(tables):
        tables.map(vaddr, DATA + 0x3000, R | W | A | D)
        tables.ram.write_u64(DATA + 0x3008, 0x5757)

    machine, _ = run(asm_program, f"""
    li a0, {vaddr}
    ld a2, 8(a0)
    li a1, 0x1234
    sd a1, 16(a0)
    """, levels=5, setup=setup)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == 2**64 - 1 and hart.x(12) == 0x5757
    assert machine.ram.read_u64(DATA + 0x3010) == 0x1234
    # the same address is not canonical for Sv48: a page fault
    machine, _ = run(asm_program, f"    li a0, {vaddr}\n    ld a2, 8(a0)", levels=4,
                     setup=setup)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE


@pytest.mark.parametrize("vaddr", [
    0x0100_0000_0000_0000,            # bit 56 set, bits 63:57 clear
    0xFE00_0000_0000_1000,            # bit 56 clear, bits 63:57 set
    0x8000_0000_8000_0000,            # only bit 63 of the upper bits
    0x0200_0000_8000_0000,            # the identity map's address with bit 57 set
], ids=hex)
@pytest.mark.parametrize("access, cause", [
    ("ld a2, 0(a0)", L.CAUSE_LOAD_PAGE), ("sd a2, 0(a0)", L.CAUSE_STORE_PAGE),
    ("amoadd.d a2, a1, (a0)", L.CAUSE_STORE_PAGE),
])
def test_sv57_non_canonical_address_faults(asm_program, vaddr, access, cause):
    """Bits 63:57 must equal bit 56, whatever the tables hold (4.6.1)."""
    machine, _ = run(asm_program, f"    li a0, {vaddr}\n    {access}", levels=5)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == cause and hart.x(MTVAL) == vaddr


def test_sv57_fetch_from_non_canonical_address_faults(asm_program):
    vaddr = 0x0100_0000_8000_0000
    machine, _ = run(asm_program, f"""
    li a0, {vaddr}
""" + JUMP_TO_A0, levels=5, prologue=M_HANDLER)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == L.CAUSE_FETCH_PAGE
    assert hart.x(MEPC) == vaddr and hart.x(MTVAL) == vaddr


def test_sv57_petapage_maps_256_tib(asm_program):
    """A leaf in the root table of Sv57 maps 2^48 bytes: here physical 0 up,
    so RAM at 0x80000000 shows through at SV57_LOW's petapage + 0x80000000."""
    base = SV57_LOW & ~((1 << 48) - 1)

    def setup(tables):
        tables.map(base, 0, R | W | A | D, level=4)
        tables.ram.write_u64(DATA + 0x40, 0x2560)

    machine, _ = run(asm_program, f"    li a0, {base + DATA + 0x40}\n    ld a2, 0(a0)",
                     levels=5, setup=setup)
    assert machine.harts[0].x(MCAUSE) == 2**64 - 1 and machine.harts[0].x(12) == 0x2560


def test_sv57_misaligned_petapage_faults(asm_program):
    base = SV57_LOW & ~((1 << 48) - 1)
    machine, _ = run(asm_program, f"    li a0, {base}\n    ld a2, 0(a0)", levels=5,
                     setup=lambda t: t.map(base, DATA, R | W | A | D, level=4))
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_LOAD_PAGE


def test_switching_from_sv57_to_sv48_forgets_sv57_translations(asm_program):
    """What Sv57 translated (and the TLB holds) is a page fault once satp says
    Sv48, even with Sv48 tables that map the address's low 48 bits."""
    def setup(tables):
        tables.map(SV57_LOW, DATA, R | W | A | D)
        tables.ram.write_u64(DATA, 48)

    def registers(tables):
        sv48 = PageTables(tables.ram, 4, base=TABLES + 0x10_0000)
        sv48.map(0x8000_0000, 0x8000_0000, R | W | X | A | D, level=2)
        sv48.map(0, 0, R | W | A | D, level=2)
        sv48.map(SV57_LOW, DATA, R | W | A | D)
        return {18: sv48.satp()}                        # s2

    machine, _ = run(asm_program, f"""
    li a0, {SV57_LOW}
    ld a2, 0(a0)             /* 48, and now in the TLB */
    csrw satp, s2
    li a3, 0
    ld a3, 0(a0)             /* not canonical for Sv48 */
    """, levels=5, setup=setup, registers=registers)
    hart = machine.harts[0]
    assert hart.x(12) == 48 and hart.x(13) == 0
    assert hart.x(MCAUSE) == L.CAUSE_LOAD_PAGE and hart.x(MTVAL) == SV57_LOW


def test_instruction_across_pages_jumping_back_runs_from_the_first_frame(asm_program):
    # Code at 0x40001ff4..0x40002003 on two pages mapped to frames out of
    # order; the 4-byte `j` at 0x40001ffe straddles them and jumps back into
    # the first page, which must still be read from its own frame (a wrong
    # frame for it once made python3's byte-compiler die with SIGILL).
    code = bytes.fromhex("13061600" "6355e600" "0100" "6ff07fff" "8280")
    #                    addi a2,1  bge a2,a4   nop    j 0x1ff4   ret

    def setup(tables):
        tables.map(0x4000_1000, DATA + 0x5000, R | X | A)
        tables.map(0x4000_2000, DATA + 0x1000, R | X | A)
        tables.ram.write(DATA + 0x5FF4, code[:12])
        tables.ram.write(DATA + 0x1000, code[12:])

    machine, _ = run(asm_program, """
    li a2, 0
    li a4, 3
    li t1, 0x40001ff4
    jalr ra, 0(t1)
    """, setup=setup)
    hart = machine.harts[0]
    assert hart.x(MCAUSE) == 2**64 - 1  # no trap
    assert hart.x(12) == 3              # the loop went round three times
