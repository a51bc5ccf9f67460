"""``hartvm.VM``: a Debian guest that runs commands, the Python API of ``hartvm run``.

A VM boots OpenSBI and Debian's kernel (fetched on first use, see
guest/debian.py) with hartvm's initramfs (guest/rootfs.py), whose /init
starts the guest agent. The board gets a virtio-console (port 0 is the
guest's /dev/hvc0, the others the agent's channel, see guest/agent.py), a
virtio entropy device and the disks asked for. The kernel's own serial
console is kept in a ConsoleLog for error reports, not shown.

Commands run one after another in the same guest; each ``run`` drives the
machine until the agent reports the command's exit status.

A VM between commands can be saved as a snapshot (snapshot.py) and
restored, as often as wanted: each restored VM is a clone with its own
identity (hostname, clock, entropy) and copy-on-write RAM and disks.
"""

import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..devices.virtio.blk import Block
from ..devices.virtio.console import Console
from ..devices.virtio.rng import Rng
from ..errors import HartvmError
from ..guest import debian, rootfs
from ..guest.agent import Agent, command_script, quote
from ..limits import MIN_GUEST_MEMORY as MIN_MEMORY, guest_memory_size
from ..machine import Machine, Stop
from . import snapshot
from .console_log import ConsoleLog
from .registry import numbered
from .results import CommandResult, CommandTimeout, GuestError, check_status

HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
BOOTARGS = "console=ttyS0 quiet cryptomgr.notests hartvm.hostname={hostname}"
# Booting to the agent takes about 0.6 billion instructions; a guest that has
# not answered after this many is stuck.
BOOT_INSTRUCTION_LIMIT = 20_000_000_000
CONFIG_VERSION = 1     # of the snapshot's config and vm sections
KILL_GRACE = 5.0       # seconds a killed command may take to end before the VM is given up
KILL_REPEAT = 0.5      # seconds between kill requests (one may come before the command starts)


def parse_drive(spec: str) -> Block:
    """``PATH[,readonly]``: a virtio block device on a raw image file."""
    path, _, options = spec.partition(",")
    if options not in ("", "readonly", "ro"):
        raise HartvmError(f"drive {spec}: unknown option {options!r} (use PATH or PATH,readonly)")
    try:
        return Block(path, readonly=bool(options))
    except OSError as error:
        raise HartvmError(f"drive {path}: {error.strerror or error}") from None


def _open_saved_drive(info, disk: Path, path) -> Block:
    """A snapshot's copy of a drive, checked: a regular file of the recorded size."""
    if not isinstance(info, dict) or not isinstance(info.get("readonly"), bool) or \
            not isinstance(info.get("size"), int):
        raise snapshot.SnapshotError(f"{path}: bad drive in the snapshot")
    try:
        snapshot.check_regular_file(disk)
        block = Block(str(disk), readonly=info["readonly"])
    except OSError as error:
        raise snapshot.SnapshotError(f"{disk}: {error.strerror or error}") from None
    if block.size != info["size"]:
        block.close()
        raise snapshot.SnapshotError(f"{disk}: {block.size} bytes, the snapshot says "
                                     f"{info['size']} (truncated or mismatched)")
    return block


def _section(sections: dict, name: str, path) -> dict:
    version, value = sections.get(name, (None, None))
    if version != CONFIG_VERSION or not isinstance(value, dict):
        raise snapshot.SnapshotError(f"{path}: section {name!r} is missing or of another "
                                     f"version")
    return value


def _open_drives(specs) -> list[Block]:
    blocks = []
    try:
        for spec in specs:
            blocks.append(parse_drive(spec))
    except BaseException:
        for block in blocks:
            block.close()
        raise
    return blocks


def _check_hostname(hostname: str) -> None:
    if not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname):
        # It travels on the kernel command line, where a space would split it.
        raise HartvmError(f"bad hostname {hostname!r}: use 1 to 64 letters, digits, "
                          f"'-' and '.'")


class VM:
    """A booted default guest. Use as a context manager, or call ``close()``.

    ``memory``: RAM size ("256M", "1G" or bytes); ``smp``: harts; ``drives``:
    disk images as "PATH" or "PATH,readonly" (/dev/vda, /dev/vdb, ...);
    ``realtime``: idle guest time passes at the host's pace instead of being
    skipped (needed when a person types to the guest). The guest's clock
    starts at the host's time and its kernel gets random bytes from the host,
    unless ``epoch_ns`` and ``rng_seed`` are given: with both (and no
    ``realtime``), the same commands give the same results and instruction
    counts every time.

    Without drives, a VM starts in milliseconds from a cached snapshot of the
    booted guest (see cache.py; the first VM of each size makes it); give
    ``boot=True`` to boot it instead. Drives need a boot: the guest finds
    its disks while it boots.
    """

    def __init__(self, memory="256M", smp: int = 1, drives=(), hostname: str = "hartvm",
                 realtime: bool = False, progress: bool = True, epoch_ns: int | None = None,
                 rng_seed: bytes | None = None, boot: bool = False):
        size = guest_memory_size(memory)
        _check_hostname(hostname)
        if not drives and not boot:
            # A booted guest without drives is the same every time: restore it.
            from .cache import booted_snapshot
            self._restore(booted_snapshot(size, smp, progress), hostname, epoch_ns, rng_seed)
            self.machine.realtime_idle = realtime
            return
        self._build(size, smp, _open_drives(drives), epoch_ns, rng_seed)
        try:
            guest = debian.default_guest(progress=progress)
            initrd = rootfs.default_initramfs(guest)
            self.machine.boot(str(guest.kernel), str(guest.firmware), str(initrd),
                              BOOTARGS.format(hostname=hostname))
            self.hostname = hostname
            self._boot()
        except BaseException:
            self.close()              # no disk file stays open behind a failed start
            raise
        # The boot's idle time is skipped either way: it is the same for every boot.
        self.machine.realtime_idle = realtime

    def _build(self, size: int, smp: int, blocks, epoch_ns, rng_seed, memory_fd=None) -> None:
        """The machine and its devices, not yet started (shared by boot and restore)."""
        self.log = ConsoleLog(keep_lines=40)
        self.closed = False
        self.machine = None
        self._overlay_dir = None     # a restored VM's disk overlays, removed by close()
        self._clock_to_set = False   # the guest's clock must be set before the next command
        self.blocks = list(blocks)
        self.service = None          # called between rounds of a command (see server.py)
        self._cancel = False
        rng_seed = os.urandom(32) if rng_seed is None else bytes(rng_seed)
        try:
            self.machine = Machine(
                memory_size=size, output=self.log.write, harts=smp,
                rtc_epoch_ns=time.time_ns() if epoch_ns is None else epoch_ns,
                rng_seed=rng_seed, memory_fd=memory_fd)
        except OSError as error:
            self.close()
            raise HartvmError(f"cannot allocate {size} bytes of guest memory: {error}") from None
        console = Console()
        self._terminal_output = None
        self.terminal = console.add_port(self._hvc_output, console=True)   # /dev/hvc0
        self.agent = Agent(console)
        board = self.machine.board
        board.attach_virtio(console)
        self.rng = Rng(hashlib.sha256(b"virtio-rng" + rng_seed).digest())
        board.attach_virtio(self.rng)
        for block in self.blocks:
            board.attach_virtio(block)

    # --- life cycle --------------------------------------------------------------
    def _boot(self) -> None:
        self.machine.stop_when = lambda: self.agent.ready or self.log.panicked
        result = self.machine.run(max_instructions=BOOT_INSTRUCTION_LIMIT)
        if not self.agent.ready:
            self._fail(result, "the guest did not start its agent")

    def close(self) -> None:
        """Stop the guest for good: its disk files are closed and its RAM released."""
        self.closed = True
        for block in self.blocks:
            block.close()
        self.blocks = []
        self.machine = None
        if self._overlay_dir is not None:
            shutil.rmtree(self._overlay_dir, ignore_errors=True)
            self._overlay_dir = None

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, result, what: str):
        self.closed = True
        if self.log.panicked:
            reason = "the guest kernel panicked"
        elif result.stop is Stop.EXITED:
            reason = f"{what}: the guest powered off"
        elif result.stop is Stop.HALTED:
            reason = f"{what}: the guest stopped with nothing left to wake it"
        elif self.agent.error:
            reason = f"{what}: {self.agent.error}"
        else:
            reason = f"{what} after {result.instructions} instructions"
        raise GuestError(self.log.report(reason))

    def _hvc_output(self, data: bytes) -> None:
        if self._terminal_output is not None:
            self._terminal_output(data)

    # --- snapshots -----------------------------------------------------------------
    def snapshot(self, path) -> None:
        """Save the VM, between commands, as the snapshot directory ``path`` (see
        snapshot.py), with each drive as the guest sees it (a sparse copy: the
        drive files may change afterwards)."""
        self._check_usable()
        if self.agent.busy or not self.agent.ready:
            raise HartvmError("a VM can be snapshotted only between commands")
        path = Path(path)
        if path.exists():
            raise HartvmError(f"{path} already exists; a snapshot is never written over")
        staging = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent or "."))
            drives = []
            for index, block in enumerate(self.blocks):
                block.export(str(staging / f"disk{index}"))
                drives.append({"path": os.path.abspath(block.path), "readonly": block.readonly,
                               "size": block.size})
            config = {"hartvm": __version__, "memory_size": self.machine.ram.size,
                      "harts": len(self.machine.harts), "drives": drives}
            sections = [("config", CONFIG_VERSION, config)]
            sections += snapshot.machine_sections(self.machine)
            sections.append(("vm", CONFIG_VERSION, {"hostname": self.hostname}))
            snapshot.write_memory(self.machine.ram, staging / snapshot.MEMORY_FILE)
            snapshot.write_state(staging / snapshot.STATE_FILE, sections)
            os.rename(staging, path)
        except OSError as error:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise HartvmError(f"cannot write the snapshot {path}: {error.strerror or error}") \
                from None
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def restore(cls, path, hostname: str | None = None, realtime: bool = False,
                epoch_ns: int | None = None, rng_seed: bytes | None = None) -> "VM":
        """A running VM from the snapshot directory ``path``, in milliseconds: its
        RAM is mapped copy-on-write, not read. The guest then gets a new identity
        as a clone must: ``hostname`` (default: the saved one), the wall-clock time
        and fresh entropy (its kernel reseeds through the VM generation ID, its
        virtio-rng gets a new seed). With ``epoch_ns`` and ``rng_seed`` given,
        restores of one snapshot run the same commands identically."""
        self = cls.__new__(cls)
        self._restore(path, hostname, epoch_ns, rng_seed)
        self.machine.realtime_idle = realtime
        return self

    def _restore(self, path, hostname, epoch_ns, rng_seed) -> None:
        sections = snapshot.read_state(path)
        config = _section(sections, "config", path)
        vm_state = _section(sections, "vm", path)
        size, harts = config.get("memory_size"), config.get("harts")
        if not isinstance(size, int) or size < MIN_MEMORY or size % 4096 or \
                not isinstance(harts, int) or not 1 <= harts <= 64:
            raise snapshot.SnapshotError(f"{path}: bad machine configuration in the snapshot")
        saved_hostname = vm_state.get("hostname")
        hostname = saved_hostname if hostname is None else hostname
        _check_hostname(hostname)
        memory_fd = snapshot.open_memory(path, size)
        try:
            self._build(size, harts, [], epoch_ns, rng_seed, memory_fd)
        finally:
            os.close(memory_fd)          # the mapping keeps the file
        try:
            self._restore_drives(config.get("drives"), path)
            snapshot.restore_machine(self.machine, sections, path)
            self.agent.ready = True
            self.hostname = saved_hostname
            self.new_identity(hostname, epoch_ns, rng_seed)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def up(name: str | None = None, memory="256M", smp: int = 1, drives=(),
           snapshot=None, progress: bool = True):
        """A long-running VM in a process of its own: returns its ``RemoteVM`` handle
        (see client.py), which has this class's ``run``, ``snapshot`` and ``fork``."""
        from .client import RemoteVM
        return RemoteVM.up(name=name, memory=memory, smp=smp, drives=drives,
                           snapshot=snapshot, progress=progress)

    def fork(self, count: int = 1) -> list["VM"]:
        """``count`` clones of this VM in this process, each with its own identity.
        They share this VM's RAM as it is now through one snapshot's RAM file,
        mapped copy-on-write by each (the file's pages are in the host's page cache
        once)."""
        if not 1 <= count <= 1024:
            raise HartvmError(f"bad fork count {count}")
        self.freeze_drives()
        staging = Path(tempfile.mkdtemp(prefix="hartvm-fork-"))
        clones = []
        try:
            self.snapshot(staging / "snapshot")
            for index in range(count):
                clones.append(VM.restore(staging / "snapshot",
                                         hostname=numbered(self.hostname, index + 1, 64)))
        except BaseException:
            for clone in clones:
                clone.close()
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)   # the mappings and overlays stay
        return clones

    def freeze_drives(self, directory=None) -> None:
        """Before a fork: the drive files become the clones' common base, so this VM
        too writes to copy-on-write overlays from now on (in ``directory``, by
        default one of its own that ``close()`` removes)."""
        for index, block in enumerate(self.blocks):
            if block.readonly or block.overlay_path is not None:
                continue
            if directory is None:
                if self._overlay_dir is None:
                    self._overlay_dir = tempfile.mkdtemp(prefix="hartvm-disks-")
                directory = self._overlay_dir
            block.fork_overlay(str(Path(directory) / f"disk{index}"))

    def _restore_drives(self, drives, path) -> None:
        if not isinstance(drives, list):
            raise snapshot.SnapshotError(f"{path}: bad drive list in the snapshot")
        self._overlay_dir = tempfile.mkdtemp(prefix="hartvm-disks-")
        for index, info in enumerate(drives):
            block = _open_saved_drive(info, Path(path) / f"disk{index}", path)
            self.blocks.append(block)
            if not block.readonly:      # the snapshot's copy is never written
                block.use_overlay(str(Path(self._overlay_dir) / f"disk{index}"))
            self.machine.board.attach_virtio(block)

    def new_identity(self, hostname: str, epoch_ns: int | None = None,
                     rng_seed: bytes | None = None) -> None:
        """What a clone needs so that it is not its twin: fresh entropy for the kernel
        (a new VM generation ID makes Linux reseed at once) and for virtio-rng, the
        wall-clock time, and its own hostname (set before the next command)."""
        _check_hostname(hostname)
        seed = os.urandom(32) if rng_seed is None else bytes(rng_seed)
        board = self.machine.board
        board.vmgenid.new_generation(hashlib.sha256(b"vmgenid" + seed).digest()[:16])
        self.rng.reseed(hashlib.sha256(b"virtio-rng" + seed).digest())
        board.rtc.epoch_ns += (time.time_ns() if epoch_ns is None else epoch_ns) - board.rtc.now()
        self.hostname = hostname
        self._clock_to_set = True

    def apply_identity(self) -> None:
        """Set the new clock and hostname now rather than with the next command (for
        a guest that runs on its own: its daemons see them at once)."""
        if self._clock_to_set:
            self.run(["true"], check=True)

    def _identity_script(self) -> bytes:
        """Shell lines that give the guest its wall-clock time and hostname."""
        if not self._clock_to_set:
            return b""
        self._clock_to_set = False
        seconds = self.machine.board.rtc.now() // 10**9
        return (f"date -s @{seconds} >/dev/null; "
                f"echo {self.hostname} >/proc/sys/kernel/hostname; ").encode()

    def cancel(self) -> None:
        """Kill the running command (from ``service``, when its client went away);
        ``run`` then returns its status, 137."""
        self._cancel = True

    def idle(self, until) -> None:
        """Let the guest run without a command (what it started in the background
        runs on) until ``until()`` is true, checked between rounds and whenever the
        machine's ``wake_fd`` is readable."""
        self._check_usable()
        self.machine.stop_when = lambda: until() or self.log.panicked or \
            self.agent.error is not None
        result = self.machine.run()
        if result.stop is not Stop.STOPPED or self.log.panicked or self.agent.error:
            self._fail(result, "the guest stopped while idle")

    def _check_usable(self) -> None:
        if self.closed:
            raise HartvmError("this VM is closed")

    # --- commands ----------------------------------------------------------------
    def run(self, args, input: bytes | None = None, env=None, cwd=None,
            timeout: float | None = None, stdout=None, stderr=None,
            stdin_fd: int | None = None, check: bool = False) -> CommandResult:
        """Run a command in the guest and wait for it, like ``subprocess.run``.

        ``args`` is an argv list (or a string for ``sh -c``); ``env`` adds
        variables; ``cwd`` is the working directory. The command reads
        ``input`` (or what comes from the file descriptor ``stdin_fd``) as its
        stdin, then end of file. Its output is collected, or passed as it
        comes to the ``stdout``/``stderr`` callables if given. ``timeout`` is
        in host seconds.
        """
        if isinstance(args, (str, bytes)):
            args = ["sh", "-c", args]
        args = list(args)
        return self._execute(command_script(args, env, cwd), args, input, timeout,
                             stdout, stderr, stdin_fd, check)

    def _execute(self, script: bytes, args, input, timeout, stdout, stderr, stdin_fd,
                 check, stdin_port=None) -> CommandResult:
        self._check_usable()
        script = self._identity_script() + script
        collected_out, collected_err = [], []
        agent, machine = self.agent, self.machine
        agent.start(script, stdout or collected_out.append, stderr or collected_err.append)
        if stdin_fd is None or stdin_port is not None:
            agent.stdin.send(input or b"")
            agent.stdin.end_input()
        if stdin_fd is not None:
            port = stdin_port or agent.stdin
            machine.input_fd = stdin_fd
            machine.input_sink = port.send
            machine.input_backlog = lambda: port.pending_bytes
            machine.on_input_end = port.end_input
        deadline = None if timeout is None else time.monotonic() + timeout
        self._cancel = False
        timed_out, kill_started, next_kill = False, None, 0.0

        def finished() -> bool:
            nonlocal timed_out, kill_started, next_kill
            if self.service is not None:
                self.service()
            if agent.status is not None or self.log.panicked or agent.error is not None:
                return True
            now = time.monotonic()
            if deadline is not None and now > deadline:
                timed_out = True
            if timed_out or self._cancel:
                # Kill the command (its EXIT follows); a guest that does not let
                # it go within KILL_GRACE seconds is given up.
                kill_started = kill_started or now
                if now >= next_kill:
                    agent.kill()
                    next_kill = now + KILL_REPEAT
                return now > kill_started + KILL_GRACE
            return False

        machine.stop_when = finished
        started = machine.instructions
        try:
            result = machine.run()
        finally:
            machine.input_fd = machine.input_sink = None
            machine.input_backlog = machine.on_input_end = None
        if agent.status is None:
            if timed_out or (result.stop is Stop.HALTED and timeout is not None):
                self.closed = True
                raise CommandTimeout(f"the command timed out after {timeout:g} s and could not "
                                     f"be killed; the VM is closed")
            self._fail(result, "the guest agent did not finish the command")
        if timed_out:
            raise CommandTimeout(f"the command timed out after {timeout:g} s and was killed")
        out, err = b"".join(collected_out), b"".join(collected_err)
        if check:
            check_status(args, agent.status, err)
        return CommandResult(args, agent.status, out, err, machine.instructions - started)

    # --- files -------------------------------------------------------------------
    def put_file(self, source, guest_path: str, mode: int = 0o644) -> None:
        """Copy a host file (a path) or ``bytes`` to ``guest_path`` in the guest."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            try:
                with open(source, "rb") as file:
                    data = file.read()
            except OSError as error:
                raise HartvmError(f"{source}: {error.strerror or error}") from None
        result = self.run(["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "put_file",
                           guest_path, f"{mode:o}"], input=data)
        if result.returncode != 0:
            raise HartvmError(f"cannot write {guest_path} in the guest: "
                              f"{result.stderr.decode(errors='replace').strip()}")

    def get_file(self, guest_path: str, destination=None) -> bytes:
        """The content of ``guest_path`` in the guest (also written to the host
        path ``destination`` if given)."""
        result = self.run(["cat", "--", guest_path])
        if result.returncode != 0:
            raise HartvmError(f"cannot read {guest_path} in the guest: "
                              f"{result.stderr.decode(errors='replace').strip()}")
        if destination is not None:
            try:
                with open(destination, "wb") as file:
                    file.write(result.stdout)
            except OSError as error:
                raise HartvmError(f"{destination}: {error.strerror or error}") from None
        return result.stdout

    # --- an interactive shell -------------------------------------------------------
    def shell(self, terminal_fd: int, output, rows: int = 24, columns: int = 80,
              term: str = "vt100", input_filter=None) -> int:
        """A login shell on the guest's /dev/hvc0, connected to the host terminal
        ``terminal_fd`` (in raw mode) and ``output``; returns its exit status."""
        self.terminal.resize(rows, columns)
        script = b"export TERM=" + quote(term.encode()) + \
            b"; exec setsid -c sh -l </dev/hvc0 >/dev/hvc0 2>&1"
        self._terminal_output = output
        self.machine.input_filter = input_filter
        try:
            return self._execute(script, ["sh", "-l"], None, None, None, None,
                                 terminal_fd, False, stdin_port=self.terminal).returncode
        finally:
            self._terminal_output = None
            self.machine.input_filter = None
