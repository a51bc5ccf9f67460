"""The ``hartvm`` command line.

Exit statuses (exit_status.py): ``boot`` ends with the guest's own status
when it ends through the test finisher or HTIF (0 for pass, and for a guest
power-off); 2 for bad input (missing or invalid file, bad size); 3 when the
guest kernel panics; 124 when ``--max-instructions`` is reached; 125 when
every hart waits for an interrupt that can never come; 70 for an internal
error. ``run``, ``exec`` and ``shell`` end with the command's own status;
124 when ``--timeout`` expires; 125 when hartvm or the guest fails. The
other commands: 0, or 1 with a message; 130 on Ctrl-C everywhere.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback

from .. import __version__, exit_status
from ..errors import HartvmError
from ..guest.progress import format_size
from ..limits import DEFAULT_GUEST_MEMORY, DEFAULT_MEMORY, MAX_HARTS, disk_size, memory_size
from ..vmm.results import CommandTimeout
from ..vmm.network import MODES as NETWORK_MODES, parse_published
from ..vmm.volumes import parse_volume
from .console import QuitRequested, SerialConsole, WindowSize


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"hartvm: error: {message}", file=sys.stderr)
        raise SystemExit(exit_status.BAD_INPUT)


def _option_type(check, name: str):
    """An argparse type made of one of hartvm's checks: the check's HartvmError
    becomes argparse's one-line usage error."""
    def convert(text: str):
        try:
            return check(text)
        except HartvmError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = name         # argparse's messages, and the hostile-CLI suite, name it
    return convert


def _images():
    from ..vmm import images        # only for image options: ps and exec stay light
    return images


_memory = _option_type(memory_size, "_memory")
_disk_size = _option_type(disk_size, "_disk_size")
_volume = _option_type(parse_volume, "_volume")
_published = _option_type(parse_published, "_published")
_image_name = _option_type(lambda text: _images().check_name(text), "_image_name")
_package_list = _option_type(
    lambda text: _images().check_packages(p for p in text.split(",") if p), "_package_list")


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
        epilog=f"Exit status of boot: the guest's status (0 = pass or power-off), "
               f"{exit_status.BAD_INPUT} bad input, {exit_status.PANIC} guest kernel panic, "
               f"{exit_status.INSTRUCTION_LIMIT} instruction limit reached, {exit_status.HALTED} guest "
               f"halted forever, {exit_status.INTERNAL} internal error. Of run and exec: the "
               f"command's status, {exit_status.TIMEOUT} timeout, {exit_status.GUEST_FAILED} hartvm or "
               f"guest failure (see hartvm run --help). Of the other commands: 0, or "
               f"{exit_status.FAILED} with a message.")
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
                      help=f"stop after N instructions (exit status {exit_status.INSTRUCTION_LIMIT})")
    boot.add_argument("--gdb", metavar="PORT", type=_port,
                      help="hold the machine before its first instruction until gdb attaches "
                           "on 127.0.0.1:PORT (target remote :PORT), as QEMU's -gdb tcp::PORT "
                           "-S; detaching lets it run on")
    boot.add_argument("--record", metavar="FILE",
                      help="write what the host gives the guest (console input, and the "
                           "moments it came at) to FILE, so that --replay FILE can run this "
                           "run again, the same to the instruction")
    boot.add_argument("--replay", metavar="FILE",
                      help="run a recorded run again: the console input comes from FILE, "
                           "at the recorded moments, not from stdin; with --gdb, it can be "
                           "debugged in reverse over that input")
    boot.add_argument("--trace", metavar="FILE", nargs="?", const="-",
                      help="write every instruction executed, disassembled, with the registers "
                           "it changed, to FILE (default stderr); slow")
    boot.add_argument("--stats", action="store_true",
                      help="print instructions executed and MIPS on stderr at exit")
    _run_parser(commands)
    shell = commands.add_parser(
        "shell", help="an interactive shell in a fresh guest, or in a running VM",
        description="Open a login shell on the console (/dev/hvc0) of a fresh guest (the "
                    "options below say which), or of the running VM NAME. The guest's "
                    "terminal follows the size of yours. Leaving the shell ends a fresh "
                    "guest; a running VM runs on. Ctrl-A X quits at once.",
        epilog=f"Exit status: the shell's; {exit_status.QUIT} after Ctrl-A X.")
    shell.add_argument("name", nargs="?", metavar="NAME",
                       help="a running VM (hartvm up) instead of a fresh guest")
    _guest_options(shell)
    fetch = commands.add_parser(
        "fetch", help="download the default guest (Debian trixie riscv64) now",
        description="Fetch OpenSBI, Debian's kernel and busybox-static through apt into "
                    "$XDG_CACHE_HOME/hartvm (default ~/.cache/hartvm) and build the guest's "
                    "initramfs. 'run' and 'shell' do this on first use; a second fetch "
                    "downloads nothing.")
    fetch.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _image_parsers(commands)
    _vm_parsers(commands)
    _fleet_parsers(commands)
    return parser


def _image_parsers(commands) -> None:
    """hartvm image ls / build / rm: the guests' root filesystems (vmm/images.py)."""
    image = commands.add_parser(
        "image", help="list, build and remove guest images",
        description="Guest images are root filesystems that run, up and shell boot with "
                    "--image NAME: busybox (built in), debian (Debian trixie with python3, "
                    "built on first use) and images of your own, built from another image "
                    "plus Debian packages. Building needs no root: mmdebstrap, fakeroot and "
                    "mke2fs on the host, then apt inside a hartvm guest.")
    actions = image.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("ls", help="list the images")
    build = actions.add_parser(
        "build", help="build an image (again)",
        description="Build NAME from --from IMAGE (default debian) plus --packages, "
                    "like a two-line Dockerfile; 'hartvm image build debian' builds the "
                    "stock image again.")
    build.add_argument("name", type=_image_name, metavar="NAME")
    build.add_argument("--from", dest="base", type=_image_name, metavar="IMAGE",
                       help="the image to start from (default debian)")
    build.add_argument("--packages", type=_package_list, default=[], metavar="P1,P2,...",
                       help="Debian packages to install, with their dependencies")
    build.add_argument("--quiet", "-q", action="store_true", help="no progress")
    remove = actions.add_parser("rm", help="remove images")
    remove.add_argument("names", type=_image_name, nargs="+", metavar="NAME")


def _image(args) -> int:
    images = _images()
    if args.action == "ls":
        print(f"{'NAME':16} {'FROM':12} {'SIZE':>9}  PACKAGES")
        for image in images.list_images():
            info = image.info
            used = "-" if image.rootfs is None else format_size(images.used_bytes(image.rootfs))
            print(f"{image.name:16} {info.get('base') or '-':12} {used:>9}  "
                  f"{','.join(info.get('packages', [])) or '-'}")
        return 0
    if args.action == "build":
        from ..vmm.vm import VM
        image = images.build(args.name, VM, base=args.base, packages=args.packages,
                             progress=not args.quiet)
        print(image.rootfs)
        return 0
    for name in args.names:
        images.remove(name)
    return 0


def _vm_parsers(commands) -> None:
    """The commands of long-running VMs (each in its own process, see vmm/server.py)."""
    up = commands.add_parser(
        "up", help="start a long-running VM and print its name",
        description="Start the default guest (restored from a cached booted snapshot) or "
                    "the snapshot given with --from in a process of its own, with a control "
                    "socket in $HARTVM_STATE_DIR (default ~/.local/state/hartvm). The guest "
                    "keeps running between commands; its hostname is its name.")
    up.add_argument("--name", metavar="NAME", help="the VM's name (default: vm-N)")
    _guest_options(up)
    up.add_argument("--from", dest="snapshot", metavar="SNAPSHOT",
                    help="restore this snapshot directory instead of the default guest")
    up.add_argument("--gdb", metavar="PORT", type=_port,
                    help="let gdb attach on 127.0.0.1:PORT at any time (target remote :PORT): "
                         "the VM stops on attach and runs on when gdb detaches; its commands "
                         "wait while it is stopped")
    exec_ = commands.add_parser(
        "exec", help="run a command in a long-running VM",
        usage="hartvm exec [options] NAME -- CMD [ARG...]",
        description="Run CMD in the VM NAME with hartvm's stdin, as 'hartvm run' does.",
        epilog=f"Exit status: CMD's own; {exit_status.TIMEOUT} when --timeout expires (CMD and what "
               f"it started are killed, the VM runs on); {exit_status.GUEST_FAILED} when the VM is "
               f"dead or fails. Commands for a VM that is running one wait their turn.")
    exec_.add_argument("name", metavar="NAME")
    exec_.add_argument("--tty", "-t", action="store_true",
                       help="run CMD on the guest's terminal, with yours in raw mode and its "
                            "size followed (for vi, top, less); Ctrl-A X quits")
    _command_options(exec_)
    ps = commands.add_parser(
        "ps", help="list long-running VMs",
        description="Name, state (running or dead), pid, guest memory, host memory the VM "
                    "uses alone (private) and shares with other processes (forks of one VM "
                    "share their unchanged pages; so do pages the host's KSM merged), uptime.")
    ps.add_argument("--json", action="store_true",
                    help="one JSON array of objects: name, state, pid, memory, harts, "
                         "started, uptime, private, shared, parent (sizes in bytes, times "
                         "in seconds)")
    logs = commands.add_parser(
        "logs", help="show a long-running VM's log",
        description="The VM process's own messages and its guest's serial console (the "
                    "kernel's messages, what is written to /dev/console), as its log file "
                    "holds them (16 MiB at most); a dead VM's too.")
    logs.add_argument("name", metavar="NAME")
    snapshot = commands.add_parser(
        "snapshot", help="save a long-running VM as a snapshot directory",
        description="Pause the VM between commands, save it to PATH (a new directory: "
                    "its state and a sparse RAM file), and resume it.")
    snapshot.add_argument("name", metavar="NAME")
    snapshot.add_argument("path", metavar="PATH")
    restore = commands.add_parser(
        "restore", help="start a long-running VM from a snapshot",
        description="Start a VM process from the snapshot directory PATH (RAM mapped "
                    "copy-on-write: milliseconds whatever its size), with a new identity: "
                    "hostname, clock and fresh entropy. Prints its name.")
    restore.add_argument("path", metavar="PATH")
    restore.add_argument("--name", metavar="NAME", help="the VM's name (default: vm-N)")
    _network_options(restore)
    fork = commands.add_parser(
        "fork", help="clone a long-running VM",
        description="Start COUNT clones of the VM NAME, each in a process of its own that "
                    "shares NAME's memory copy-on-write, with its own copy-on-write disk "
                    "overlays and a new identity. Prints their names (NAME-1, NAME-2, ...).")
    fork.add_argument("name", metavar="NAME")
    fork.add_argument("--count", "-n", type=_positive, default=1, metavar="K")
    stop = commands.add_parser(
        "stop", help="stop long-running VMs",
        description="Stop the VMs named (or every VM with --all) and remove what they left; "
                    "a dead VM is just cleaned up. A running VM's guest first syncs and "
                    "unmounts the filesystems of its --drive disks, and their files are "
                    "fsynced.")
    stop.add_argument("names", nargs="*", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every VM")
    cp = commands.add_parser(
        "cp", help="copy files between the host and a long-running VM",
        usage="hartvm cp SRC NAME:PATH | hartvm cp NAME:PATH DST",
        description="Copy a file or a directory (recursively) into or out of the VM NAME, "
                    "as docker cp does: exactly one side is NAME:PATH (write a host path "
                    "with ':' as ./PATH). SRC ending in /. copies a directory's contents; a "
                    "destination that is a directory receives SRC under its own name, "
                    "otherwise it is created (its parent must exist) or a file replaced. "
                    "Files copied in belong to root; an archive from the guest is never "
                    "written outside DST.")
    cp.add_argument("source", metavar="SRC")
    cp.add_argument("destination", metavar="DST")
    serve = commands.add_parser(
        "serve", help="an HTTP API and a browser console over the long-running VMs",
        description="Serve the VMs of this user over HTTP: create, list, stop, run "
                    "commands (output streamed), files, snapshots and forks; the "
                    "OpenAPI description is at /openapi.json. Every request needs "
                    "'Authorization: Bearer TOKEN': $HARTVM_TOKEN if set, else a new "
                    "token written to $HARTVM_STATE_DIR/serve-token (mode 0600). A "
                    "browser console (a terminal on a VM's shell, its log, buttons) is "
                    "at /console: open the URL printed at start, which carries the token.")
    serve.add_argument("--listen", type=_listen, default=("127.0.0.1", 8000),
                       metavar="HOST:PORT",
                       help="an IP address and a port (default 127.0.0.1:8000; port 0: "
                            "any free one, printed)")


def _guest_options(parser) -> None:
    parser.add_argument("--memory", "-m", type=_memory, default=DEFAULT_GUEST_MEMORY,
                        metavar="SIZE", help="guest RAM, e.g. 256M (default) or 1G")
    parser.add_argument("--smp", type=_positive, default=1, metavar="N",
                        help=f"number of harts (default 1, at most {MAX_HARTS})")
    parser.add_argument("--drive", action="append", default=[], metavar="PATH[,readonly]",
                        help="a raw disk image as a virtio block device, /dev/vda, /dev/vdb, "
                             "... (repeatable)")
    parser.add_argument("--image", type=_image_name, default="busybox", metavar="NAME",
                        help="the guest's root filesystem: busybox (default, an initramfs), "
                             "debian (built on first use) or an image of 'hartvm image build'")
    parser.add_argument("--disk-size", type=_disk_size, metavar="SIZE",
                        help="an image's root disk size, e.g. 8G (default: the image's, 2G "
                             "for debian); sparse on the host"),
    parser.add_argument("--volume", "-v", type=_volume, action="append", default=[],
                        metavar="HOST_DIR:GUEST_DIR[:ro]",
                        help="share a host directory with the guest at GUEST_DIR (virtio-9p; "
                             "read-only with :ro); what the guest writes there is on the host "
                             "at once (repeatable)")
    _network_options(parser)


def _network_options(parser) -> None:
    parser.add_argument("--network", choices=NETWORK_MODES, default="none",
                        help="none (default: no network card), user (NAT to the outside "
                             "through passt; the host's loopback is not reachable) or host "
                             "(as user, and the host's loopback is the guest's 10.0.2.2)")
    parser.add_argument("--publish", "-p", type=_published, action="append", default=[],
                        metavar="[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]",
                        help="forward a host port (on 127.0.0.1 unless HOST_IP is given) to "
                             "the guest; needs --network (repeatable)")


def _run_parser(commands) -> None:
    run = commands.add_parser(
        "run", help="run a command in a fresh Debian guest",
        usage="hartvm run [options] -- CMD [ARG...]",
        description="Boot the default guest (Debian's kernel and busybox, fetched on first "
                    "use), run CMD in it with hartvm's stdin, and pass its stdout and stderr "
                    "back separately. However CMD ends (also by --timeout or Ctrl-C), what "
                    "the guest wrote to --drive disks is in their files before hartvm exits.",
        epilog=f"Exit status: CMD's own (127 when it does not exist, 128+N when killed by "
               f"signal N); {exit_status.TIMEOUT} when --timeout expires; {exit_status.GUEST_FAILED} when "
               f"hartvm or the guest fails (bad option, kernel panic, agent failure), with "
               f"the reason and the last console lines on stderr; {exit_status.INTERRUPTED} on "
               f"Ctrl-C (CMD is killed first).")
    _guest_options(run)
    _command_options(run)


def _command_options(parser) -> None:
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help=f"kill the command after this many seconds (exit {exit_status.TIMEOUT})")
    parser.add_argument("--env", "-e", action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable for CMD (repeatable)")
    parser.add_argument("--workdir", "-w", metavar="DIR", help="run CMD in this guest directory")
    parser.add_argument("argv", nargs="*", metavar="CMD [ARG...]",
                        help="the command and its arguments")


def _ensure_image(name: str, progress: bool = True) -> None:
    """Build ``debian`` now if a command asks for it the first time (with its
    progress shown here, not in a VM process's log); other images must exist."""
    if not _images().is_built(name):
        from ..vmm.vm import VM
        _images().find(name, progress, VM)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _listen(text: str) -> tuple[str, int]:
    """HOST:PORT with HOST an IP address ([...] for IPv6), PORT 0 to 65535."""
    import ipaddress
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        if (":" in host) != bracketed:
            raise ValueError(host)
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not HOST:PORT with HOST an IP address: {text!r}") from None
    return host, _port(port)


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


def _report(console: SerialConsole, message: str) -> None:
    print(f"hartvm: {console.report(message)}", file=sys.stderr)


def _check_journal_options(args) -> None:
    if args.record and args.replay:
        raise HartvmError("--record and --replay exclude each other")
    if args.record and args.gdb is not None:
        raise HartvmError("--record and --gdb exclude each other (going back would branch "
                          "the record): record, then debug with --replay FILE --gdb PORT")


def _boot(args) -> int:
    from ..hostio import HostIO
    from ..journal import Recording, Replay
    from ..machine import Machine
    from ..vmm.vm import parse_drive
    started = time.perf_counter()
    if args.bios == "none" and (args.initrd or args.append):
        raise HartvmError("--initrd and --append need firmware to pass them on (not --bios none)")
    _check_journal_options(args)
    console = SerialConsole()
    io = HostIO(output=console.write, flush=console.flush)
    try:
        machine = Machine(memory_size=args.memory, harts=args.smp, io=io)
    except OSError as error:
        raise HartvmError(f"cannot allocate {args.memory} bytes of guest memory: {error}") from None
    for index, spec in enumerate(args.drive):
        machine.board.attach_virtio(f"disk{index}", parse_drive(spec))
    if args.bios == "none":
        machine.load_kernel(args.kernel)
    else:
        machine.boot(args.kernel, _firmware(args), args.initrd, args.append)
    if args.trace:
        try:
            io.trace = sys.stderr if args.trace == "-" else open(args.trace, "w")
        except OSError as error:
            raise HartvmError(f"--trace {args.trace}: {error.strerror or error}") from None
    if args.record:
        io.journal = Recording(args.record, machine)
    elif args.replay:
        io.journal = Replay(args.replay, machine)
    status = exit_status.INTERRUPTED   # what the record says of a run that raised (Ctrl-C)
    try:
        status = _boot_run(args, machine, console, io, started)
        return status
    except HartvmError:
        status = exit_status.BAD_INPUT
        raise
    finally:
        if args.record:
            io.journal.close(status)


def _boot_run(args, machine, console, io, started) -> int:
    from ..machine import Stop
    ready = time.perf_counter()
    limit = args.max_instructions
    if args.replay:
        end, recorded_status = io.journal.end
        limit = end if limit is None else min(limit, end)
    try:
        # A replay reads no stdin: the terminal stays as it is (Ctrl-C works).
        with contextlib.nullcontext() if args.replay else console.attached(0):
            uart = machine.board.devices["uart0"]
            io.add_input(0, uart.push_input, lambda: len(uart.host_input),
                         filter=console.filter_input)
            # Under a debugger guest time follows instructions, so that it can go
            # back; a replay takes the moments input came at from its record.
            io.realtime = console.interactive and args.gdb is None and not args.replay
            if args.gdb is not None:
                from ..vmm.gdbstub import debug
                ended = debug(machine, args.gdb,
                              announce=lambda line: print(line, file=sys.stderr, flush=True))
                if ended.kind == "exited":
                    return ended.status & 0xFF
                if ended.kind == "killed":
                    return exit_status.KILLED
            if limit is not None:
                limit = max(limit - machine.instructions, 0)
            result = machine.run(until=lambda: console.panicked, max_instructions=limit)
    except QuitRequested:
        print("\r\nhartvm: quit (Ctrl-A X)", file=sys.stderr)
        return exit_status.QUIT
    except (HartvmError, KeyboardInterrupt):
        raise
    except Exception as error:  # a hartvm bug: say so, with the guest state to report
        if os.environ.get("HARTVM_DEBUG"):
            traceback.print_exc()
        print(f"hartvm: internal error: {error!r} (set HARTVM_DEBUG=1 for details)\n"
              f"{machine.harts[0].dump()}", file=sys.stderr)
        return exit_status.INTERNAL
    finished = time.perf_counter()
    if args.stats:
        seconds = finished - ready
        mips = result.instructions / seconds / 1e6 if seconds > 0 else 0.0
        print(f"hartvm: {result.instructions} instructions in {seconds:.3f} s "
              f"({mips:.1f} MIPS), start-up {ready - started:.3f} s", file=sys.stderr)
    if args.replay and result.stop is Stop.INSTRUCTION_LIMIT and \
            machine.instructions >= io.journal.end[0] and \
            machine.instructions != args.max_instructions:
        # The recorded run ended here from outside (Ctrl-A X, a kill, ...), or
        # a debugger went past where it ended.
        status = exit_status.KILLED if recorded_status is None else recorded_status
        print(f"hartvm: the replay reached the end of the record at instruction "
              f"{machine.instructions}, where the recorded run ended "
              + ("(killed)" if recorded_status is None else f"with status {status}"),
              file=sys.stderr)
        return status
    if result.stop is Stop.INSTRUCTION_LIMIT:
        _report(console, f"stopped after --max-instructions {args.max_instructions} "
                         f"(pc {machine.harts[0].pc:#x})")
        return exit_status.INSTRUCTION_LIMIT
    if result.stop is Stop.HALTED:
        _report(console, f"the guest waits for an interrupt that can never arrive "
                         f"(wfi at pc {machine.harts[0].pc:#x}); stopping")
        return exit_status.HALTED
    if result.stop is Stop.STOPPED:
        _report(console, "the guest kernel panicked")
        return exit_status.PANIC
    return result.status & 0xFF if result.status <= 0xFF else 1


def _writer_to(stream):
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


def _command(args) -> tuple[list, dict]:
    """CMD and its environment from run's or exec's options."""
    argv = args.argv
    if not argv:
        raise HartvmError(f"no command given: hartvm {args.command} [options] -- CMD [ARG...]")
    env = {}
    for item in args.env:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise HartvmError(f"--env {item!r}: use NAME=VALUE")
        env[name] = value
    return argv, env


def _run_command(guest, args) -> int:
    argv, env = _command(args)
    try:
        result = guest.run(argv, env=env, cwd=args.workdir, timeout=args.timeout,
                           stdout=_writer_to(sys.stdout.buffer),
                           stderr=_writer_to(sys.stderr.buffer), stdin_fd=0,
                           volumes=getattr(args, "volume", None))
    except CommandTimeout as error:
        print(f"hartvm: {error}", file=sys.stderr)
        return exit_status.TIMEOUT
    return result.returncode


def _run(args) -> int:
    _command(args)          # bad options fail before the VM starts
    # On a terminal, idle time passes at the host's pace (a person may type).
    _ensure_image(args.image)
    if not args.drive and os.environ.get("HARTVM_POOL", "1") != "0":
        from ..vmm.client import RunPool
        return _run_command(RunPool(args.memory, args.smp, realtime=_is_tty(0),
                                    image=args.image, disk_size=args.disk_size,
                                    network=args.network, publish=args.publish), args)
    from ..vmm.vm import VM
    with VM(memory=args.memory, smp=args.smp, drives=args.drive,
            realtime=_is_tty(0), image=args.image, disk_size=args.disk_size,
            network=args.network, publish=args.publish) as guest:
        with _ctrl_c_kills_the_command(guest) as interrupted:
            status = _run_command(guest, args)
        if interrupted:
            raise KeyboardInterrupt       # after the guest flushed its drives (VM.close)
        return status


@contextlib.contextmanager
def _ctrl_c_kills_the_command(guest):
    """While a command runs in this process's VM, Ctrl-C (SIGINT) kills the command
    in the guest, as a timeout does, instead of stopping the machine wherever it
    is (perhaps in the middle of a device's request): the guest then still
    flushes its drives when the VM closes. Yields a list that holds True once
    that happened. A second Ctrl-C interrupts at once."""
    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        guest.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _shell(args) -> int:
    if args.name is not None:
        from ..vmm.client import RemoteVM
        return _on_terminal(RemoteVM(args.name))
    from ..vmm.vm import VM
    with VM(memory=args.memory, smp=args.smp, drives=args.drive, realtime=True,
            volumes=args.volume, image=args.image, disk_size=args.disk_size,
            network=args.network, publish=args.publish) as guest:
        return _on_terminal(guest)


def _on_terminal(guest, argv=None, **options) -> int:
    """A login shell (or ``argv``) on ``guest``'s terminal, with this one in raw
    mode and its size followed; Ctrl-A X quits."""
    console = SerialConsole()
    with WindowSize(0) as window:
        rows, columns = window.size()
        try:
            with console.attached(0):
                return guest.shell(0, _writer_to(sys.stdout.buffer), rows=rows, columns=columns,
                                   term=os.environ.get("TERM", "vt100"),
                                   input_filter=console.filter_input, args=argv,
                                   window=window, **options)
        except QuitRequested:
            print("\r\nhartvm: quit (Ctrl-A X)", file=sys.stderr)
            return exit_status.QUIT
        except CommandTimeout as error:
            print(f"\r\nhartvm: {error}", file=sys.stderr)
            return exit_status.TIMEOUT


def _fetch(args) -> int:
    from ..guest import debian, rootfs
    guest = debian.default_guest(progress=not args.quiet)
    initrd = rootfs.default_initramfs(guest)
    for name, path in (("firmware", guest.firmware), ("kernel", guest.kernel),
                       ("busybox", guest.busybox), ("initramfs", initrd)):
        print(f"{name:10} {path}")
    return 0


def _up(args) -> int:
    from ..vmm.client import RemoteVM
    if args.snapshot is None:
        _ensure_image(args.image)
    vm = RemoteVM.up(name=args.name, memory=args.memory, smp=args.smp, drives=args.drive,
                     snapshot=args.snapshot, volumes=args.volume, image=args.image,
                     disk_size=args.disk_size, network=args.network, publish=args.publish,
                     gdb=args.gdb)
    print(vm.name)
    return 0


def _exec(args) -> int:
    from ..vmm.client import RemoteVM
    argv, env = _command(args)
    if args.tty:
        return _on_terminal(RemoteVM(args.name), argv, timeout=args.timeout, env=env,
                            cwd=args.workdir)
    return _run_command(RemoteVM(args.name), args)


def _ps(args) -> int:
    from ..vmm.registry import list_vms
    if args.json:
        print(json.dumps([{"name": info.name, "state": info.state, "pid": info.pid,
                           "memory": info.memory, "harts": info.harts,
                           "started": info.started, "uptime": info.uptime,
                           "private": info.private, "shared": info.shared,
                           "parent": info.parent} for info in list_vms()], indent=1))
        return 0
    rows = [("NAME", "STATE", "PID", "MEMORY", "PRIVATE", "SHARED", "UPTIME", "PARENT")]
    for info in list_vms():
        rows.append((info.name, info.state, str(info.pid or "-"), _mib(info.memory),
                     _mib(info.private), _mib(info.shared), _duration(info.uptime),
                     info.parent or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _logs(args) -> int:
    from ..vmm.registry import LOG, find
    path = find(args.name).directory / LOG
    try:
        with open(path, "rb") as log:
            while chunk := log.read(1 << 16):
                sys.stdout.buffer.write(chunk)
    except FileNotFoundError:
        pass                          # nothing logged yet
    except OSError as error:
        raise HartvmError(f"{path}: {error.strerror or error}") from None
    sys.stdout.buffer.flush()
    return 0


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}M" if size else "-"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _snapshot(args) -> int:
    from ..vmm.client import RemoteVM
    RemoteVM(args.name).snapshot(args.path)
    return 0


def _restore(args) -> int:
    from ..vmm.client import RemoteVM
    print(RemoteVM.restore(args.path, name=args.name, network=args.network,
                           publish=args.publish).name)
    return 0


def _fork(args) -> int:
    from ..vmm.client import RemoteVM
    for clone in RemoteVM(args.name).fork(args.count):
        print(clone.name)
    return 0


def _guest_side(spec: str):
    """(NAME, PATH) when ``spec`` names a path in a VM, else None (a host path:
    one that starts with / or ., or has no ':' after a name)."""
    if spec.startswith(("/", ".")):
        return None
    name, colon, path = spec.partition(":")
    if not colon or not name:
        return None
    from ..vmm.registry import check_name
    check_name(name)
    if not path:
        raise HartvmError(f"cp {spec}: give a path in the VM after '{name}:'")
    return name, path


def _cp(args) -> int:
    from ..vmm.client import RemoteVM
    source, destination = _guest_side(args.source), _guest_side(args.destination)
    if (source is None) == (destination is None):
        raise HartvmError("cp: exactly one of SRC and DST must be NAME:PATH (a VM's path; "
                          "write a host path with ':' as ./PATH)")
    if source is not None:
        RemoteVM(source[0]).copy_from_guest(source[1], args.destination)
    else:
        RemoteVM(destination[0]).copy_to_guest(args.source, destination[1])
    return 0


def _serve(args) -> int:
    host, port = args.listen
    try:
        from .serve import serve
    except ImportError as error:
        raise HartvmError(f"hartvm serve needs FastAPI and uvicorn ({error}): "
                          f"pip install 'hartvm[serve]'") from None
    return serve(host, port)


def _fleet_parsers(commands) -> None:
    """hartvm fleet run: many commands across a Ray cluster (frontends/fleet.py)."""
    fleet = commands.add_parser(
        "fleet", help="run many commands across the machines of a Ray cluster",
        description="Run commands in fresh VMs on every node of a Ray cluster whose "
                    "nodes have hartvm installed (pip install 'hartvm[fleet]').")
    actions = fleet.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="run each line of stdin as a shell command",
        usage="hartvm fleet run [--address ADDR] [options] < COMMANDS",
        description="Run each non-blank line of stdin as a shell command (sh -c) in a "
                    "fresh VM of the run pool of one of the cluster's nodes, and print "
                    "each one's stdout and stderr in the order of the lines, as they "
                    "come. A node that dies hands its commands to the others. A "
                    "progress line is shown on stderr when it is a terminal.",
        epilog=f"Exit status, as GNU parallel's: the number of commands that failed "
               f"(a status other than 0), 101 for more than 100; "
               f"{exit_status.GUEST_FAILED} when the fleet fails (no Ray, an unreachable "
               f"cluster, every node dead); {exit_status.BAD_INPUT} for a bad option.")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), metavar="ADDR",
                     help="the cluster: the head's HOST:PORT as 'ray start --head' printed "
                          "it, or 'auto' for the cluster this machine belongs to (default "
                          "$RAY_ADDRESS)")
    run.add_argument("--image", type=_image_name, default="busybox", metavar="NAME",
                     help="the guest image on every node (default busybox)")
    run.add_argument("--memory", "-m", type=_memory, default=DEFAULT_GUEST_MEMORY,
                     metavar="SIZE", help="guest RAM of each VM (default 256M)")
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                     help=f"kill a command after this many seconds (its status "
                          f"{exit_status.TIMEOUT})")
    run.add_argument("--volume", "-v", action="append", default=[],
                     metavar="HOST_DIR:GUEST_DIR[:ro]",
                     help="share a host directory, which every node must have (a shared "
                          "filesystem), with every VM (repeatable)")


def _fleet(args) -> int:
    from ..guest.progress import ProgressLine
    from .fleet import Fleet
    if not args.address:
        raise HartvmError("give the cluster's address: --address HOST:PORT (or set RAY_ADDRESS)")
    try:
        lines = sys.stdin.buffer.read().decode().splitlines()
    except UnicodeDecodeError as error:
        raise HartvmError(f"stdin is not UTF-8 text: {error}") from None
    commands = [line for line in lines if line.strip()]
    if not commands:
        return 0
    line = ProgressLine(f"fleet: {len(commands)} commands", 0)
    finished = []

    def progress(result) -> None:
        finished.append(result.index)
        line.update(100 * len(finished) / len(commands))

    failures = 0
    with Fleet(args.address) as fleet:
        for result in fleet.imap(commands, image=args.image, memory=args.memory,
                                 volumes=args.volume, timeout=args.timeout,
                                 progress=progress):
            line.finish(ok=False)        # out of the way of the command's output
            for stream, data in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
                stream.buffer.write(data)
                stream.flush()
            failures += result.returncode != 0
            line.update(100 * len(finished) / len(commands))
    line.finish(ok=False)
    return min(failures, 101)


def _stop(args) -> int:
    from ..vmm.client import RemoteVM
    from ..vmm.registry import list_vms
    if args.all == bool(args.names):
        raise HartvmError("name the VMs to stop, or give --all")
    names = [info.name for info in list_vms()] if args.all else args.names
    result = 0
    for name in names:
        try:
            RemoteVM(name).stop()
        except HartvmError as error:
            print(f"hartvm: {error}", file=sys.stderr)
            result = exit_status.FAILED
    return result


COMMANDS = {"boot": _boot, "run": _run, "shell": _shell, "fetch": _fetch, "up": _up,
            "exec": _exec, "ps": _ps, "logs": _logs, "snapshot": _snapshot, "restore": _restore,
            "fork": _fork, "stop": _stop, "cp": _cp, "image": _image, "serve": _serve,
            "fleet": _fleet}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = None
    if argv[:1] in (["run"], ["exec"]) and "--" in argv:
        # Everything before "--" is hartvm's options, in any order; after it, CMD.
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    args = build_parser().parse_args(argv)
    if command is not None:
        args.argv = args.argv + command
    if args.command in ("boot", "fetch"):
        failed = exit_status.BAD_INPUT
    elif args.command in ("run", "shell", "exec", "fleet"):
        failed = exit_status.GUEST_FAILED
    else:
        failed = exit_status.FAILED
    try:
        return COMMANDS[args.command](args)
    except HartvmError as error:
        print(f"hartvm: {error}", file=sys.stderr)
        return failed
    except KeyboardInterrupt:
        print("hartvm: interrupted", file=sys.stderr)
        return exit_status.INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`hartvm run -- yes | head`): end as a
        # program killed by SIGPIPE would, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_status.BROKEN_PIPE
