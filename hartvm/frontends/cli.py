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
from ..vmm import vm
from .console import Console, QuitRequested

EXIT_BAD_INPUT = 2
EXIT_PANIC = 3
EXIT_INTERNAL = 70
EXIT_INSTRUCTION_LIMIT = 124
EXIT_HALTED = 125
EXIT_TIMEOUT = 124        # run: --timeout expired (as timeout(1))
EXIT_GUEST_FAILED = 125   # run, shell: hartvm or the guest failed (as docker run)
EXIT_BROKEN_PIPE = 128 + 13   # stdout closed by its reader, as a shell reports SIGPIPE
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
        epilog="Exit status of boot: the guest's status (0 = pass or power-off), 2 bad input, "
               "3 guest kernel panic, 124 instruction limit reached, 125 guest halted forever, "
               "70 internal error. Of run: the command's status, 124 timeout, 125 hartvm or "
               "guest failure (see hartvm run --help).")
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
    _run_parser(commands)
    shell = commands.add_parser(
        "shell", help="an interactive shell in a fresh Debian guest",
        description="Boot the default guest and open a login shell on its console "
                    "(/dev/hvc0). Ctrl-A X quits; leaving the shell ends the VM.")
    _guest_options(shell)
    fetch = commands.add_parser(
        "fetch", help="download the default guest (Debian trixie riscv64) now",
        description="Fetch OpenSBI, Debian's kernel and busybox-static through apt into "
                    "$XDG_CACHE_HOME/hartvm (default ~/.cache/hartvm) and build the guest's "
                    "initramfs. 'run' and 'shell' do this on first use; a second fetch "
                    "downloads nothing.")
    fetch.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return parser


def _guest_options(parser) -> None:
    parser.add_argument("--memory", "-m", type=_memory, default=vm.DEFAULT_MEMORY,
                        metavar="SIZE", help="guest RAM, e.g. 256M (default) or 1G")
    parser.add_argument("--smp", type=_positive, default=1, metavar="N",
                        help=f"number of harts (default 1, at most {MAX_HARTS})")
    parser.add_argument("--drive", action="append", default=[], metavar="PATH[,readonly]",
                        help="a raw disk image as a virtio block device, /dev/vda, /dev/vdb, "
                             "... (repeatable)")


def _run_parser(commands) -> None:
    run = commands.add_parser(
        "run", help="run a command in a fresh Debian guest",
        usage="hartvm run [options] -- CMD [ARG...]",
        description="Boot the default guest (Debian's kernel and busybox, fetched on first "
                    "use), run CMD in it with hartvm's stdin, and pass its stdout and stderr "
                    "back separately.",
        epilog=f"Exit status: CMD's own (127 when it does not exist, 128+N when killed by "
               f"signal N); {EXIT_TIMEOUT} when --timeout expires; {EXIT_GUEST_FAILED} when "
               f"hartvm or the guest fails (bad option, kernel panic, agent failure), with "
               f"the reason and the last console lines on stderr.")
    _guest_options(run)
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                     help=f"stop the command after this many seconds (exit {EXIT_TIMEOUT})")
    run.add_argument("--env", "-e", action="append", default=[], metavar="NAME=VALUE",
                     help="set an environment variable for CMD (repeatable)")
    run.add_argument("--workdir", "-w", metavar="DIR", help="run CMD in this guest directory")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARG...]",
                     help="the command and its arguments")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _firmware(args) -> str:
    if args.bios != "default":
        return args.bios
    from ..guest import debian
    return str(debian.opensbi_firmware())


def _report(console: Console, message: str) -> None:
    print(f"hartvm: {console.report(message)}", file=sys.stderr)


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
        machine.board.attach_virtio(vm.parse_drive(spec))
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


def _stream(stream):
    """A callable that writes guest output to ``stream`` as it comes."""
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return write


def _is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _run(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise HartvmError("no command given: hartvm run [options] -- CMD [ARG...]")
    env = {}
    for item in args.env:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise HartvmError(f"--env {item!r}: use NAME=VALUE")
        env[name] = value
    # On a terminal, idle time passes at the host's pace (a person may type).
    with vm.VM(memory=args.memory, smp=args.smp, drives=args.drive,
               realtime=_is_tty(0)) as guest:
        try:
            result = guest.run(argv, env=env, cwd=args.workdir, timeout=args.timeout,
                               stdout=_stream(sys.stdout.buffer),
                               stderr=_stream(sys.stderr.buffer), stdin_fd=0)
        except vm.CommandTimeout as error:
            print(f"hartvm: {error}", file=sys.stderr)
            return EXIT_TIMEOUT
    return result.returncode


def _shell(args) -> int:
    console = Console()
    with vm.VM(memory=args.memory, smp=args.smp, drives=args.drive, realtime=True) as guest:
        size = os.get_terminal_size(0) if _is_tty(0) else os.terminal_size((80, 24))
        try:
            with console.attached(0):
                return guest.shell(0, _stream(sys.stdout.buffer), rows=size.lines,
                                   columns=size.columns, term=os.environ.get("TERM", "vt100"),
                                   input_filter=console.filter_input)
        except QuitRequested:
            print("\r\nhartvm: quit (Ctrl-A X)", file=sys.stderr)
            return 0


def _fetch(args) -> int:
    from ..guest import debian, rootfs
    guest = debian.default_guest(progress=not args.quiet)
    initrd = rootfs.default_initramfs(guest)
    for name, path in (("firmware", guest.firmware), ("kernel", guest.kernel),
                       ("busybox", guest.busybox), ("initramfs", initrd)):
        print(f"{name:10} {path}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    failed = EXIT_BAD_INPUT if args.command in ("boot", "fetch") else EXIT_GUEST_FAILED
    try:
        if args.command == "boot":
            return _boot(args)
        if args.command == "run":
            return _run(args)
        if args.command == "shell":
            return _shell(args)
        if args.command == "fetch":
            return _fetch(args)
    except HartvmError as error:
        print(f"hartvm: {error}", file=sys.stderr)
        return failed
    except KeyboardInterrupt:
        print("hartvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`hartvm run -- yes | head`): end as a
        # program killed by SIGPIPE would, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return EXIT_BAD_INPUT
