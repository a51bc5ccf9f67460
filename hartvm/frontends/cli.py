"""The ``hartvm`` command line.

Exit statuses: the guest's own status when it ends through the test
finisher or HTIF (0 for pass, and for a guest power-off); 2 for bad input
(missing or invalid file, bad size); 3 when the guest kernel panics; 124
when ``--max-instructions`` is reached; 125 when every hart waits for an
interrupt that can never come; 70 for an internal error.
"""

import argparse
import os
import sys
import time
import traceback

from .. import __version__
from ..errors import HartvmError
from ..machine import DEFAULT_MEMORY, MAX_HARTS, Machine, Stop, parse_size
from ..devices.virtio.blk import Block
from .console import Console, QuitRequested

EXIT_BAD_INPUT = 2
EXIT_PANIC = 3
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
        epilog="Exit status: the guest's status (0 = pass or power-off), 2 bad input, "
               "3 guest kernel panic, 124 instruction limit reached, 125 guest halted forever, "
               "70 internal error.")
    parser.add_argument("--version", action="version", version=f"hartvm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    boot = commands.add_parser(
        "boot", help="boot a machine from a kernel image",
        description="Boot the virt machine like qemu-system-riscv64 -M virt -nographic. "
                    "The serial console is the terminal (Ctrl-A X quits); when stdin is not "
                    "a terminal it is piped to the guest. With --bios none, the ELF given with "
                    "--kernel runs in M-mode from its entry point and the run ends when it "
                    "writes the test finisher (0x100000) or HTIF tohost. Otherwise the firmware "
                    "(OpenSBI) starts the kernel in S-mode; guest power-off ends the run.")
    boot.add_argument("--kernel", required=True, metavar="PATH",
                      help="kernel: a Linux Image, or any RISC-V 64-bit ELF")
    boot.add_argument("--bios", default="default", metavar="PATH|none|default",
                      help="firmware loaded at the start of RAM (default: OpenSBI fw_dynamic "
                           "from Debian, fetched and cached on first use); 'none' runs the "
                           "kernel ELF directly in M-mode")
    boot.add_argument("--initrd", metavar="PATH", help="initial ramdisk for the kernel")
    boot.add_argument("--append", default="", metavar="STRING",
                      help="kernel command line (the device tree's bootargs)")
    boot.add_argument("--drive", action="append", default=[], metavar="PATH[,readonly]",
                      help="a raw disk image as a virtio block device (repeatable)")
    boot.add_argument("--memory", "-m", type=_memory, default=DEFAULT_MEMORY, metavar="SIZE",
                      help="RAM size, e.g. 128M or 1G (default 128M)")
    boot.add_argument("--smp", type=_positive, default=1, metavar="N",
                      help=f"number of harts (default 1, at most {MAX_HARTS})")
    boot.add_argument("--max-instructions", type=_positive, metavar="N",
                      help=f"stop after N instructions (exit status {EXIT_INSTRUCTION_LIMIT})")
    boot.add_argument("--trace", metavar="FILE", nargs="?", const="-",
                      help="write every instruction executed, disassembled, with the registers "
                           "it changed, to FILE (default stderr); slow")
    boot.add_argument("--stats", action="store_true",
                      help="print instructions executed and MIPS on stderr at exit")
    return parser


def _firmware(args) -> str:
    if args.bios != "default":
        return args.bios
    from ..guest import debian
    return str(debian.opensbi_firmware())


def _drive(spec: str) -> Block:
    """--drive PATH[,readonly]: a virtio block device on a raw image file."""
    path, _, options = spec.partition(",")
    if options not in ("", "readonly", "ro"):
        raise HartvmError(f"--drive {spec}: unknown option {options!r} (use PATH or PATH,readonly)")
    try:
        return Block(path, readonly=bool(options))
    except OSError as error:
        raise HartvmError(f"--drive {path}: {error.strerror or error}") from None


def _report(console: Console, message: str) -> None:
    lines = console.last_lines()[-10:]
    print(f"hartvm: {message}", file=sys.stderr)
    if lines:
        print("hartvm: last console lines:\n" + "\n".join("  | " + line for line in lines),
              file=sys.stderr)


def _boot(args) -> int:
    started = time.perf_counter()
    if args.smp > MAX_HARTS:
        raise HartvmError(f"--smp {args.smp}: at most {MAX_HARTS} harts")
    if args.bios == "none" and (args.initrd or args.append):
        raise HartvmError("--initrd and --append need firmware to pass them on (not --bios none)")
    console = Console()
    try:
        machine = Machine(memory_size=args.memory, output=console.write, harts=args.smp,
                          flush=console.flush)
    except OSError as error:
        raise HartvmError(f"cannot allocate {args.memory} bytes of guest memory: {error}") from None
    for spec in args.drive:
        machine.board.attach_virtio(_drive(spec))
    if args.bios == "none":
        machine.load_kernel(args.kernel)
    else:
        machine.boot(args.kernel, _firmware(args), args.initrd, args.append)
    machine.stop_when = lambda: console.panicked
    if args.trace:
        try:
            machine.trace = sys.stderr if args.trace == "-" else open(args.trace, "w")
        except OSError as error:
            raise HartvmError(f"--trace {args.trace}: {error.strerror or error}") from None
    ready = time.perf_counter()
    try:
        with console.attached(0):
            machine.input_fd = 0
            machine.input_filter = console.filter_input
            machine.realtime_idle = console.interactive
            result = machine.run(max_instructions=args.max_instructions)
    except QuitRequested:
        print("\r\nhartvm: quit (Ctrl-A X)", file=sys.stderr)
        return 0
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
        _report(console, f"stopped after --max-instructions {args.max_instructions} "
                         f"(pc {machine.harts[0].pc:#x})")
        return EXIT_INSTRUCTION_LIMIT
    if result.stop is Stop.HALTED:
        _report(console, f"the guest waits for an interrupt that can never arrive "
                         f"(wfi at pc {machine.harts[0].pc:#x}); stopping")
        return EXIT_HALTED
    if result.stop is Stop.STOPPED:
        _report(console, "the guest kernel panicked")
        return EXIT_PANIC
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
