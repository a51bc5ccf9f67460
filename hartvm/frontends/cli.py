"""The ``hartvm`` command line.

Exit statuses: the guest's own status when it ends through the test
finisher or HTIF (0 for pass); 2 for bad input (missing or invalid file,
bad size); 124 when ``--max-instructions`` is reached; 125 when every hart
waits for an interrupt that can never come; 70 for an internal error.
"""

import argparse
import os
import sys
import time
import traceback

from .. import __version__
from ..errors import HartvmError
from ..machine import DEFAULT_MEMORY, Machine, Stop, parse_size

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INSTRUCTION_LIMIT = 124
EXIT_HALTED = 125
MIN_MEMORY = 1 << 20
MAX_MEMORY = 1 << 40


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"hartvm: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _memory(text: str) -> int:
    try:
        size = parse_size(text)
    except HartvmError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if size < MIN_MEMORY or size > MAX_MEMORY or size % 4096:
        raise argparse.ArgumentTypeError(
            f"bad memory size {text!r}: must be a multiple of 4 KiB between 1M and 1T")
    return size


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hartvm",
        description="hartvm: a RISC-V RV64 virtual machine (QEMU 'virt' board layout).",
        epilog="Exit status: the guest's status (0 = pass), 2 bad input, "
               "124 instruction limit reached, 125 guest halted forever, 70 internal error.")
    parser.add_argument("--version", action="version", version=f"hartvm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    boot = commands.add_parser(
        "boot", help="boot a machine from a kernel image",
        description="Boot the virt machine. With --bios none, the ELF given with --kernel "
                    "runs in M-mode from its entry point, like qemu-system-riscv64 -M virt "
                    "-bios none -kernel PROG.elf. The UART is on stdout; the run ends when the "
                    "program writes the test finisher (0x100000) or HTIF tohost.")
    boot.add_argument("--kernel", required=True, metavar="PATH",
                      help="RISC-V 64-bit ELF to load (its segments must lie in RAM)")
    boot.add_argument("--bios", default="none", metavar="none",
                      help="firmware; only 'none' (run the kernel in M-mode) for now")
    boot.add_argument("--memory", "-m", type=_memory, default=DEFAULT_MEMORY, metavar="SIZE",
                      help="RAM size, e.g. 128M or 1G (default 128M)")
    boot.add_argument("--max-instructions", type=_positive, metavar="N",
                      help=f"stop after N instructions (exit status {EXIT_INSTRUCTION_LIMIT})")
    boot.add_argument("--stats", action="store_true",
                      help="print instructions executed and MIPS on stderr at exit")
    return parser


def _boot(args) -> int:
    if args.bios != "none":
        raise HartvmError(f"--bios {args.bios}: only '--bios none' is supported so far")
    started = time.perf_counter()
    try:
        machine = Machine(memory_size=args.memory)
    except OSError as error:
        raise HartvmError(f"cannot allocate {args.memory} bytes of guest memory: {error}") from None
    machine.load_kernel(args.kernel)
    ready = time.perf_counter()
    try:
        result = machine.run(max_instructions=args.max_instructions)
    except (HartvmError, KeyboardInterrupt):
        raise
    except Exception as error:  # a hartvm bug: say so, with the guest state to report
        if os.environ.get("HARTVM_DEBUG"):
            traceback.print_exc()
        print(f"hartvm: internal error: {error!r} (set HARTVM_DEBUG=1 for details)\n"
              f"{machine.harts[0].dump()}", file=sys.stderr)
        return EXIT_INTERNAL
    finished = time.perf_counter()
    if args.stats:
        seconds = finished - ready
        mips = result.instructions / seconds / 1e6 if seconds > 0 else 0.0
        print(f"hartvm: {result.instructions} instructions in {seconds:.3f} s "
              f"({mips:.1f} MIPS), start-up {ready - started:.3f} s", file=sys.stderr)
    if result.stop is Stop.INSTRUCTION_LIMIT:
        print(f"hartvm: stopped after --max-instructions {args.max_instructions} "
              f"(pc {machine.harts[0].pc:#x})", file=sys.stderr)
        return EXIT_INSTRUCTION_LIMIT
    if result.stop is Stop.HALTED:
        print(f"hartvm: the guest waits for an interrupt that can never arrive "
              f"(wfi at pc {machine.harts[0].pc:#x}); stopping", file=sys.stderr)
        return EXIT_HALTED
    return result.status & 0xFF if result.status <= 0xFF else 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "boot":
            return _boot(args)
    except HartvmError as error:
        print(f"hartvm: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("hartvm: interrupted", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT
