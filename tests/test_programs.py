"""Bare-metal C programs: hartvm prints what QEMU prints and exits as QEMU does.

Each program (tests/programs and the benchmark workloads) is built by the
test set-up, run under ``qemu-system-riscv64 -M virt -bios none`` and under
``hartvm boot --bios none``; console output and exit status must match.
"""

import os

import pytest

from conftest import ROOT, build_c, run_hartvm, run_qemu

WORKLOADS = os.path.join(ROOT, "benchmarks", "workloads")
SAME_AS_QEMU = ["printf", "arith", "atomics", "traps", "exitcode"]


@pytest.mark.parametrize("name", SAME_AS_QEMU)
def test_program_matches_qemu(toolchain, qemu, name):
    elf = build_c(name)
    expected_output, expected_status = run_qemu(qemu, elf)
    result = run_hartvm(elf)
    assert result.stdout == expected_output
    assert result.returncode == expected_status


@pytest.mark.parametrize("name", sorted(f[:-2] for f in os.listdir(WORKLOADS) if f.endswith(".c")))
def test_benchmark_workload_matches_qemu(toolchain, qemu, name):
    elf = build_c("bench-" + name, [os.path.join(WORKLOADS, name + ".c")])
    expected_output, expected_status = run_qemu(qemu, elf)
    result = run_hartvm(elf)
    assert expected_status == 0 and expected_output
    assert (result.stdout, result.returncode) == (expected_output, expected_status)


def test_exit_status_of_failing_program(toolchain):
    result = run_hartvm(build_c("exitcode"))
    assert result.returncode == 42
    assert result.stdout == b"failing on purpose\n"


def test_htif_console_and_exit(toolchain):
    result = run_hartvm(build_c("htif"))
    assert result.stdout == b"hello through HTIF\n"
    assert result.returncode == 5


def test_traps_program_output(toolchain):
    result = run_hartvm(build_c("traps"))
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "trap 1: mcause b"
    assert "trap 4: mcause 2 mtval ffffffff" in lines
    assert lines[-1] == "8 traps, mstatus.MPP 0"  # mret leaves MPP at U
    assert result.returncode == 0


def _same_as_qemu(qemu, name: str, *lines: bytes) -> None:
    """tests/programs/NAME.c passes under QEMU, printing each of ``lines`` (the
    yardstick shows what it tests), and hartvm prints and exits as QEMU does."""
    elf = build_c(name)
    expected_output, expected_status = run_qemu(qemu, elf)
    assert expected_status == 0
    for line in lines:
        assert line in expected_output, expected_output
    result = run_hartvm(elf)
    assert (result.stdout, result.returncode) == (expected_output, expected_status)


def test_sstc_matches_qemu(toolchain, qemu):
    """Sstc as QEMU 7.2 runs it (QEMU_CPU leaves sstc on): stimecmp from M- and
    S-mode, mcounteren.TM and menvcfg.STCE, STIP from the time, a delegated
    supervisor timer interrupt."""
    _same_as_qemu(qemu, "sstc", b"S-mode stimecmp with TM=1 STCE=1: 0 illegal\n",
                  b"S-mode stimecmp with TM=0 STCE=1: 2 illegal\n",
                  b"S-mode timer interrupt: scause 8000000000000005, on time 1")


def test_sv57_matches_qemu(toolchain, qemu):
    """Sv57 as QEMU 7.2 translates it: five-level walks, A/D, a petapage and
    the page faults of non-canonical addresses."""
    _same_as_qemu(qemu, "sv57", b"satp mode after writing Sv57: a\n", b"low: 5757",
                  b"petapage: 2560\n")


def test_pmp_matches_qemu(toolchain, qemu):
    """PMP checks (TOR, NA4, NAPOT, partial matches, S-mode default deny, a locked
    entry) as QEMU 7.2 runs them."""
    _same_as_qemu(qemu, "pmp", b"no entry, S load: cause 5\n", b"TOR R, S store: cause 7\n",
                  b"NA4 RW, S 4-byte store: cause -1\n")
