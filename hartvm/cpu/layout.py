"""Layout of a hart's state: one int64 numpy array per hart.

All architectural state of a hart lives in a single flat ``int64`` array so
that it can be handed to numba, copied, snapshotted and compared as a whole.
Slots below are indexes into that array:

* ``0..31``    integer registers x0..x31 (x0 is forced to zero after every
  instruction)
* ``32..63``   floating-point registers f0..f31 as raw 64-bit patterns
* ``64..127``  machine state that is not a CSR (pc, privilege, counters, the
  LR/SC reservation, the description of the last exit from the run loop,
  the Sdtrig triggers)
* ``CSR + n``  CSR number ``n`` (0..4095), so a CSR is stored at a fixed slot
  given by its number; CSRs with side effects are handled in ``csr.py``
* ``TLB...``   the software TLB of ``mmu.py`` (a cache: cleared on restore)
* ``WATCHES...`` the addresses the host watches (``checks.py``; the host's, not
  the guest's: cleared on restore, armed again by the machine)

Also here: CSR numbers, trap causes and ``mstatus``/``mip`` bit masks
(RISC-V privileged spec 1.12, sections 2.2, 3.1).
"""

import numpy as np

# --- registers -------------------------------------------------------------
XREG = 0
FREG = 32

# --- machine state ---------------------------------------------------------
PC = 64
PRIV = 65            # current privilege: 0 U, 1 S, 3 M
RESERVATION = 66     # physical address reserved by LR, -1 when none
INSTRET = 67         # instructions retired (an instruction that traps does not retire)
CYCLE = 68           # cycles: one per instruction executed, plus time skipped in WFI
TIME_OFFSET = 69     # added to cycle-derived mtime (mtime writes)
MTIMECMP = 70        # this hart's ACLINT mtimecmp (compared inside the run loop)
HARTID = 71
RAM_BASE = 72        # physical address of RAM
RAM_SIZE = 73        # bytes
ROM_BASE = 74        # physical address of the (executable) boot ROM
ROM_SIZE = 75
WATCH_PADDR = 76     # HTIF tohost: a RAM store here exits the run loop; -1 off
PARCEL = 77          # the 16 bits of the compressed instruction being executed
STEPS = 78           # instructions executed, including those that trapped
DEBUG_EBREAK = 79    # 1: ebreak leaves the run loop (a debugger's breakpoint) instead of trapping

EXIT_REASON = 80     # why run() returned, one of EXIT_*
EXIT_PADDR = 81      # MMIO: physical address of the access
EXIT_SIZE = 82       # MMIO: access size in bytes
EXIT_VALUE = 83      # MMIO: value to store
EXIT_RD = 84         # MMIO load: destination register number
EXIT_FLAGS = 85      # MMIO: combination of MMIO_* flags
EXIT_ILEN = 86       # MMIO: length of the instruction (2 or 4)
EXIT_VADDR = 87      # MMIO: virtual address of the access (mtval if it faults)
SEIP_LINE = 88       # the PLIC's supervisor external interrupt line (ORed into mip.SEIP)
CHECKS = 89          # which checks the MMU's slow path makes: a set of checks.CHECK_* bits
TSELECT = 90         # Sdtrig (triggers.py): the selected trigger
ICOUNT_MARK = 91     # STEPS when the icount triggers were last brought up to date
ICOUNT_PRIV = 92     # the privilege the steps since then ran in
TRIGGERS = 93        # TRIGGER_COUNT triggers of 3 slots: tdata1, tdata2, tdata3
TRIGGER_COUNT = 2    # as QEMU 7.2 (RV_MAX_TRIGGERS); 93..98
TRAP_EXITS = 99      # 1: every trap leaves the run loop (EXIT_TRAP), for Machine.hook_trap
# 100..127 are free

CSR = 4096
TLB = CSR + 4096     # software TLB: for fetch, load, store: TLB_ENTRIES tags, then pages
TLB_ENTRIES = 256
WATCHES = TLB + 3 * 2 * TLB_ENTRIES   # WATCH_ENTRIES of (start, end, access bits)
WATCH_ENTRIES = 32
STATE_SIZE = WATCHES + 3 * WATCH_ENTRIES

# --- exit reasons of run() ---------------------------------------------------
EXIT_BUDGET = 0      # the instruction budget is spent
EXIT_MMIO = 1        # a load or store to a non-RAM physical address
EXIT_WFI = 2         # WFI with no interrupt pending
EXIT_HTIF = 3        # the guest stored to the watched tohost address
EXIT_EBREAK = 4      # ebreak with DEBUG_EBREAK set: pc is the ebreak's, nothing executed
EXIT_WATCH = 5       # an access the host watches, before it is made: EXIT_VADDR, _SIZE, _FLAGS (access kind)
EXIT_TRAP = 6        # a trap was taken while the host hooks traps: EXIT_VALUE cause, EXIT_VADDR
                     # tval, EXIT_PADDR the pc it was raised at, EXIT_FLAGS the privilege it came from

MMIO_WRITE = 1
MMIO_UNSIGNED = 2    # zero-extend the loaded value (lbu, lhu, lwu)
MMIO_FP = 4          # the destination is a floating-point register

# --- privilege levels ------------------------------------------------------
PRIV_U = 0
PRIV_S = 1
PRIV_M = 3

# --- CSR numbers (privileged spec, tables 2.2 - 2.5) -------------------------
FFLAGS = 0x001
FRM = 0x002
FCSR = 0x003
CYCLE_CSR = 0xC00
TIME_CSR = 0xC01
INSTRET_CSR = 0xC02
SSTATUS = 0x100
SIE = 0x104
STVEC = 0x105
SCOUNTEREN = 0x106
SENVCFG = 0x10A
SSCRATCH = 0x140
SEPC = 0x141
SCAUSE = 0x142
STVAL = 0x143
SIP = 0x144
STIMECMP = 0x14D     # Sstc: supervisor timer compare (RV64: one 64-bit CSR)
SATP = 0x180
MVENDORID = 0xF11
MARCHID = 0xF12
MIMPID = 0xF13
MHARTID = 0xF14
MCONFIGPTR = 0xF15
MSTATUS = 0x300
MISA = 0x301
MEDELEG = 0x302
MIDELEG = 0x303
MIE = 0x304
MTVEC = 0x305
MCOUNTEREN = 0x306
MENVCFG = 0x30A
MCOUNTINHIBIT = 0x320
MSCRATCH = 0x340
MEPC = 0x341
MCAUSE = 0x342
MTVAL = 0x343
MIP = 0x344
PMPCFG0 = 0x3A0
PMPADDR0 = 0x3B0
MCYCLE = 0xB00
MINSTRET = 0xB02

# --- mstatus fields (privileged spec 3.1.6) ------------------------------------
MSTATUS_SIE = 1 << 1
MSTATUS_MIE = 1 << 3
MSTATUS_SPIE = 1 << 5
MSTATUS_MPIE = 1 << 7
MSTATUS_SPP = 1 << 8
MSTATUS_MPP_SHIFT = 11
MSTATUS_MPP = 3 << 11
MSTATUS_FS = 3 << 13
MSTATUS_SD = -(1 << 63)  # bit 63: FS (or XS/VS) is Dirty
MSTATUS_MPRV = 1 << 17
MSTATUS_SUM = 1 << 18
MSTATUS_MXR = 1 << 19
MSTATUS_TVM = 1 << 20
MSTATUS_TW = 1 << 21
MSTATUS_TSR = 1 << 22
MSTATUS_UXL = 2 << 32   # XLEN 64 for U-mode, read-only
MSTATUS_SXL = 2 << 34   # XLEN 64 for S-mode, read-only

# --- counter enables and environment configuration (privileged spec 3.1.11, 3.1.18) ---
COUNTEREN_TM = 1 << 1    # mcounteren/scounteren.TM: time (and, with Sstc, stimecmp)
MENVCFG_STCE = -(1 << 63)  # menvcfg bit 63, Sstc: stimecmp drives mip.STIP

# --- interrupts (privileged spec 3.1.9) ---------------------------------------
IRQ_SSI = 1
IRQ_MSI = 3
IRQ_STI = 5
IRQ_MTI = 7
IRQ_SEI = 9
IRQ_MEI = 11
MIP_SSIP = 1 << IRQ_SSI
MIP_MSIP = 1 << IRQ_MSI
MIP_STIP = 1 << IRQ_STI
MIP_MTIP = 1 << IRQ_MTI
MIP_SEIP = 1 << IRQ_SEI
MIP_MEIP = 1 << IRQ_MEI
S_INTERRUPTS = MIP_SSIP | MIP_STIP | MIP_SEIP
ALL_INTERRUPTS = S_INTERRUPTS | MIP_MSIP | MIP_MTIP | MIP_MEIP

# --- exception causes (privileged spec table 3.6) ------------------------------
CAUSE_FETCH_MISALIGNED = 0
CAUSE_FETCH_ACCESS = 1
CAUSE_ILLEGAL = 2
CAUSE_BREAKPOINT = 3
CAUSE_LOAD_MISALIGNED = 4
CAUSE_LOAD_ACCESS = 5
CAUSE_STORE_MISALIGNED = 6
CAUSE_STORE_ACCESS = 7
CAUSE_ECALL_U = 8
CAUSE_ECALL_S = 9
CAUSE_ECALL_M = 11
CAUSE_FETCH_PAGE = 12
CAUSE_LOAD_PAGE = 13
CAUSE_STORE_PAGE = 15
WATCH_HIT = 64       # not a cause: the MMU's slow path met a watched address (take_trap exits)
INTERRUPT_BIT = np.int64(-9223372036854775808)  # bit 63 of mcause

# --- timing ----------------------------------------------------------------
TIMEBASE_HZ = 10_000_000   # ACLINT mtime frequency, as on QEMU virt
CYCLES_PER_TICK = 10       # the hart is modelled at 100 MHz, one instruction a cycle

# --- the ISA: one list, from which misa and the device tree's riscv,isa come ----
# What the hart implements, in the canonical order of the ISA manual's naming
# rules (unprivileged spec, chapter "ISA Extension Naming Conventions"):
# single letters first, then the Z extensions, then the S extensions (Sstc:
# privileged spec chapter "Sstc"). As TinyEMU does, the
# device tree's ``riscv,isa`` string and ``misa`` are both built from it.
EXTENSIONS = ("i", "m", "a", "f", "d", "c", "zicsr", "zifencei", "zicntr", "sstc")
PRIVILEGE_MODES = "su"        # misa's S and U bits: supervisor and user modes


def _misa(letters: str) -> int:
    """misa for RV64 with these single-letter extensions (privileged spec 3.1.1)."""
    value = 2 << 62  # MXL = 64
    for letter in letters.upper():
        value |= 1 << (ord(letter) - ord("A"))
    return value - (1 << 64)  # as a signed int64


def isa_string() -> str:
    """The ``riscv,isa`` string: rv64 + letters + _z and _s extensions."""
    return "rv64" + "".join(e for e in EXTENSIONS if len(e) == 1) + \
        "".join("_" + e for e in EXTENSIONS if len(e) > 1)


MISA_VALUE = _misa("".join(e for e in EXTENSIONS if len(e) == 1) + PRIVILEGE_MODES)
