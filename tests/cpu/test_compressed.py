"""The C extension: every 16-bit encoding, checked against GNU objdump.

objdump (Debian's binutils-riscv64-linux-gnu) decodes each of the 49152
compressed parcels; hartvm's expansion of the same parcel, placed at the
same address, is decoded too. The compressed instruction, rewritten by the
ISA spec's table of equivalences (ISA spec 16.x "RVC instruction set
listings"), must read the same as the expansion; parcels that objdump finds
invalid must expand to 0 (illegal instruction). Then a program checks that
compressed instructions execute with a 2-byte length (links, fall-through).
"""

import re
import shutil
import struct
import subprocess

import pytest

from hartvm.cpu.compressed import EXPANSION_TABLE
from test_integer import run_cases

OBJDUMP = "riscv64-linux-gnu-objdump"

# compressed mnemonic -> (base mnemonic, function of the operand list)
EQUIVALENT = {
    "c.addi4spn": ("addi", lambda o: o),
    "c.fld": ("fld", lambda o: o), "c.lw": ("lw", lambda o: o), "c.ld": ("ld", lambda o: o),
    "c.fsd": ("fsd", lambda o: o), "c.sw": ("sw", lambda o: o), "c.sd": ("sd", lambda o: o),
    "c.nop": ("addi", lambda o: ["x0", "x0", o[0] if o else "0"]),
    "c.addi": ("addi", lambda o: [o[0], o[0], o[1]]),
    "c.addiw": ("addiw", lambda o: [o[0], o[0], o[1]]),
    "c.li": ("addi", lambda o: [o[0], "x0", o[1]]),
    "c.addi16sp": ("addi", lambda o: [o[0], o[0], o[1]]),
    "c.lui": ("lui", lambda o: o),
    "c.srli": ("srli", lambda o: [o[0], o[0], o[1]]),
    "c.srai": ("srai", lambda o: [o[0], o[0], o[1]]),
    "c.srli64": ("srli", lambda o: [o[0], o[0], "0x0"]),
    "c.srai64": ("srai", lambda o: [o[0], o[0], "0x0"]),
    "c.slli64": ("slli", lambda o: [o[0], o[0], "0x0"]),
    "c.andi": ("andi", lambda o: [o[0], o[0], o[1]]),
    "c.sub": ("sub", lambda o: [o[0], o[0], o[1]]),
    "c.xor": ("xor", lambda o: [o[0], o[0], o[1]]),
    "c.or": ("or", lambda o: [o[0], o[0], o[1]]),
    "c.and": ("and", lambda o: [o[0], o[0], o[1]]),
    "c.subw": ("subw", lambda o: [o[0], o[0], o[1]]),
    "c.addw": ("addw", lambda o: [o[0], o[0], o[1]]),
    "c.j": ("jal", lambda o: ["x0", o[0]]),
    "c.beqz": ("beq", lambda o: [o[0], "x0", o[1]]),
    "c.bnez": ("bne", lambda o: [o[0], "x0", o[1]]),
    "c.slli": ("slli", lambda o: [o[0], o[0], o[1]]),
    "c.fldsp": ("fld", lambda o: o), "c.lwsp": ("lw", lambda o: o), "c.ldsp": ("ld", lambda o: o),
    "c.jr": ("jalr", lambda o: ["x0", "0(" + o[0] + ")"]),
    "c.mv": ("add", lambda o: [o[0], "x0", o[1]]),
    "c.ebreak": ("ebreak", lambda o: []),
    "c.jalr": ("jalr", lambda o: ["x1", "0(" + o[0] + ")"]),
    "c.add": ("add", lambda o: [o[0], o[0], o[1]]),
    "c.fsdsp": ("fsd", lambda o: o), "c.swsp": ("sw", lambda o: o), "c.sdsp": ("sd", lambda o: o),
}

# Encodings objdump still decodes that the ISA spec reserves: hartvm raises
# illegal instruction for them, as QEMU does.
RESERVED = {0x6101: "c.addi16sp with nzimm=0 (ISA spec 16.5)"}

LINE = re.compile(r"^\s*([0-9a-f]+):\s+[0-9a-f]+\s+(\S+)\s*(.*)$")


def _disassemble(path):
    """{address: (mnemonic, [operands])} of a flat binary of 4-byte slots."""
    text = subprocess.run([OBJDUMP, "-D", "-b", "binary", "-m", "riscv:rv64",
                           "-M", "no-aliases,numeric", path],
                          capture_output=True, text=True, check=True).stdout
    result = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match and int(match.group(1), 16) % 4 == 0:
            operands = [o for o in match.group(3).split("#")[0].strip().split(",") if o]
            result[int(match.group(1), 16)] = (match.group(2), operands)
    return result


def _number(operand):
    try:
        return int(operand, 0)
    except ValueError:
        return operand


def _normal(mnemonic, operands):
    # objdump prints lui immediates as 20-bit hex and shifts in hex: compare numbers.
    return mnemonic, [_number(o) for o in operands]


def test_every_parcel_matches_objdump(tmp_path):
    if shutil.which(OBJDUMP) is None:
        pytest.fail(f"{OBJDUMP} not found: install binutils-riscv64-linux-gnu")
    parcels = [c for c in range(65536) if c & 3 != 3]
    compressed_bin = tmp_path / "parcels.bin"
    expanded_bin = tmp_path / "expanded.bin"
    compressed_bin.write_bytes(b"".join(struct.pack("<HH", c, 0) for c in parcels))
    expanded_bin.write_bytes(b"".join(
        struct.pack("<i", int(EXPANSION_TABLE[c])) for c in parcels))
    compressed = _disassemble(compressed_bin)
    expanded = _disassemble(expanded_bin)
    mismatches = []
    for index, parcel in enumerate(parcels):
        address = 4 * index
        mnemonic, operands = compressed[address]
        expansion = int(EXPANSION_TABLE[parcel])
        if mnemonic not in EQUIVALENT or parcel in RESERVED:  # not a valid instruction
            if expansion != 0:
                mismatches.append(f"{parcel:04x}: objdump says {mnemonic}, expanded to {expansion & 0xFFFFFFFF:08x}")
            continue
        base, convert = EQUIVALENT[mnemonic]
        want = _normal(base, convert(operands))
        got = _normal(*expanded[address]) if expansion else ("illegal", [])
        if got != want:
            mismatches.append(f"{parcel:04x}: {mnemonic} {','.join(operands)} -> {got}, want {want}")
    assert not mismatches, f"{len(mismatches)} mismatches, first: " + "; ".join(mismatches[:10])


def test_compressed_instructions_execute(asm_program):
    run_cases(asm_program, [
        ("    c.li a2, -3", -3),
        ("    c.li a2, 5\n    c.addi a2, -7", -2),
        ("    li a2, 0x7fffffff\n    c.addiw a2, 1", -(2**31)),
        ("    c.lui a2, 0xfffe1\n    srai a2, a2, 12", -31),
        ("    c.li a0, 3\n    c.mv a2, a0\n    c.add a2, a0", 6),
        ("    c.li a2, 1\n    c.slli a2, 63\n    c.srai a2, 63", -1),
        ("    mv a3, gp\n    li a4, 123\n    c.sd a4, 8(a3)\n    c.ld a2, 8(a3)", 123),
        ("    c.addi16sp sp, -64\n    c.addi4spn a2, sp, 16\n    sub a2, a2, sp\n"
         "    c.addi16sp sp, 64", 16),
        ("    c.li a2, 0\n    c.beqz a2, 1f\n    c.li a2, 9\n1:", 0),
        ("    c.li a2, 1\n    c.bnez a2, 1f\n    c.li a2, 9\n1:", 1),
        # c.jal does not exist on RV64; c.jalr links to the instruction after the 2-byte jump
        ("    la a0, 1f\n    c.jalr a0\n2:  j 3f\n1:  la a1, 2b\n    sub a2, ra, a1\n3:", 0),
        ("    la a0, 1f\n    c.li a2, 4\n    c.jr a0\n    c.li a2, 5\n1:", 4),
        ("    c.li a2, 4\n    c.j 1f\n    c.li a2, 5\n1:", 4),
    ])
