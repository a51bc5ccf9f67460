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
import logging
import os
import re
import shutil
import time
from pathlib import Path

from ..devices.virtio.blk import Block
from ..devices.virtio.console import VirtioConsole
from ..devices.virtio.rng import Rng
from ..errors import HartvmError, quoted, shown
from ..guest import debian, rootfs
from ..guest.agent import IMAGE_RUNNER, Agent
from ..guest.command import command_script, quote
from ..hostfile import drive_specs
from ..hostio import HostIO
from .. import limits
from ..limits import check_harts, guest_memory_size
from ..machine import Machine, Stop
from . import cache, images, scratch, snapshot
from .arguments import CallerCode, check_command_io, check_terminal, check_terminal_size
from .client import RemoteVM
from .console_log import ConsoleLog
from .files import FileTransfer
from .flush import flush_guest
from .network import NONE as NO_NETWORK, check_mode, new_mac, parse_publish_list
from .network_card import NetworkCard
from .registry import numbered
from .shared_folders import SharedFolders
from .results import CommandIO, CommandResult, CommandTimeout, GuestError, Interrupted
from .volumes import parse_volumes

HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
BOOTARGS = "console=ttyS0 quiet cryptomgr.notests hartvm.hostname={hostname}"
# Booting to the agent takes about 0.6 billion instructions; a guest that has
# not answered after this many is stuck.
BOOT_INSTRUCTION_LIMIT = 20_000_000_000
KILL_GRACE = 5.0       # seconds a killed command may take to end before the VM is given up
KILL_REPEAT = 0.5      # seconds between kill requests (one may come before the command starts)
HANGUP_GRACE = 3.0     # seconds a terminal session may run on after its terminal's input ended
MAX_CLONES = 1024
IDENTITY_SECONDS = 30.0   # host seconds a clone's first answer may take (a million instructions)
# Setting a clone's identity takes the agent about a million instructions;
# a guest that has not answered after this many per hart does not run.
IDENTITY_BUDGET = 100_000_000
FIRST_CLONE_PID = 1000            # clones' pids start above the booted guest's own
PID_MAX = 32768                   # the kernel's pid_max for few CPUs (kernel/pid.c)
OVERLAY_PREFIX = "hartvm-disks-"   # a restored or forked VM's drive overlays, in $TMPDIR

log = logging.getLogger("hartvm.vmm")


def parse_drive(spec: str) -> Block:
    """``PATH[,readonly]``: a virtio block device on a raw image file."""
    path, _, options = spec.partition(",")
    if options not in ("", "readonly", "ro"):
        raise HartvmError(f"drive {shown(spec)}: unknown option {quoted(options)} "
                          f"(use PATH or PATH,readonly)")
    try:
        return Block(path, readonly=bool(options))
    except OSError as error:
        raise HartvmError(f"drive {shown(path)}: {error.strerror or error}") from None


def open_drives(specs) -> list[Block]:
    blocks = []
    try:
        for spec in drive_specs(specs):
            blocks.append(parse_drive(spec))
    except BaseException:
        for block in blocks:
            block.close()
        raise
    return blocks


def check_clock_and_seed(epoch_ns, rng_seed) -> None:
    if epoch_ns is not None and (type(epoch_ns) is not int or not 0 <= epoch_ns < 1 << 63):
        raise HartvmError(f"bad epoch_ns {epoch_ns!r}: nanoseconds since 1970, 0 or more")
    if rng_seed is not None and not isinstance(rng_seed, (bytes, bytearray)):
        raise HartvmError(f"rng_seed must be bytes, not a {type(rng_seed).__name__}")


def check_hostname(hostname: str) -> None:
    if not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname):
        # It travels on the kernel command line, where a space would split it.
        raise HartvmError(f"bad hostname {quoted(hostname)}: use 1 to 64 letters, digits, "
                          f"'-' and '.'")


def booted_snapshot(memory: int, harts: int, progress: bool = True,
                    image: str = images.BUSYBOX, disk_size: int | None = None,
                    network_card: bool = False) -> Path:
    """The cached snapshot of the guest ``image`` (with a root disk of
    ``disk_size``, and a network card if asked) booted with ``memory`` bytes
    and ``harts`` harts (see cache.py), made now if there is none yet."""
    guest = debian.default_guest(progress=progress)
    initrd = rootfs.default_initramfs(guest)
    found = images.find(image, progress, VM)
    path = cache.booted_snapshot_path((guest.kernel, guest.firmware, initrd), memory, harts,
                                      found.name + ("+net" if network_card else ""),
                                      f"{found.key}:{disk_size}")
    if cache.is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with VM(memory=memory, smp=harts, progress=progress, boot=True, image=image,
            disk_size=disk_size, network="user" if network_card else NO_NETWORK) as vm:
        if found.rootfs is not None or network_card:
            # Clones start with the snapshot's page cache: with python3's files
            # read once here, `python3 -c pass` in a clone reads no disk. And
            # with the network card up and its lease taken (network_card.py).
            vm.run(["sh", "-c", "command -v python3 >/dev/null && python3 -c pass; true"])
        try:
            vm.snapshot(path)
        except HartvmError:
            if not cache.is_complete(path):   # else another hartvm saved it first
                raise
    cache.prune(path)
    return path


class VM(FileTransfer):
    """A booted default guest. Use as a context manager, or call ``close()``.

    ``memory``: RAM size ("256M", "1G" or bytes); ``smp``: harts; ``drives``:
    disk images as "PATH" or "PATH,readonly" (/dev/vda, /dev/vdb, ...);
    ``volumes``: host directories shared for the VM's life, "HOST_DIR:GUEST_DIR[:ro]"
    (volumes.py; ``run`` takes more for one command);
    ``realtime``: idle guest time passes at the host's pace instead of being
    skipped (needed when a person types to the guest). The guest's clock
    starts at the host's time and its kernel gets random bytes from the host,
    unless ``epoch_ns`` and ``rng_seed`` are given: with both (and no
    ``realtime``, no network), the same commands give the same results and
    instruction counts every time.
    ``network``: "none" (no network card), "user" or "host" (network.py);
    ``publish``: host ports forwarded to the guest, "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]".
    A VM with a network runs in realtime: the outside world does not wait.

    A VM is built in one of two ways, each a named method: booted
    (``_build_for_boot``: firmware, kernel, initramfs, up to the agent's
    READY), or restored from a snapshot (``_build_from_snapshot``). Without
    drives, ``VM()`` takes the second way, from a cached snapshot of the
    booted guest (made by the first VM of each size): it starts in
    milliseconds. ``boot=True`` takes the first way; so do drives, since the
    guest finds its disks while it boots.
    """

    SAVE_VERSION = 1        # of the snapshot's "vm" section

    def __init__(self, memory="256M", smp: int = 1, drives=(), hostname: str = "hartvm",
                 realtime: bool = False, progress: bool = True, epoch_ns: int | None = None,
                 rng_seed: bytes | None = None, boot: bool = False,
                 image: str = images.BUSYBOX, volumes=(), disk_size=None,
                 network: str = NO_NETWORK, publish=()):
        size = guest_memory_size(memory)
        check_mode(network)
        published = parse_publish_list(publish, network)
        check_harts(smp)
        check_hostname(hostname)
        check_clock_and_seed(epoch_ns, rng_seed)
        images.check_name(image)
        volumes = parse_volumes(volumes)
        disk_size = limits.disk_size(disk_size)
        if disk_size is not None and image == images.BUSYBOX:
            raise HartvmError("--disk-size is the size of an image's root disk; busybox has none")
        card = network != NO_NETWORK
        if drives or boot:
            self._build_for_boot(size, smp, drives, hostname, epoch_ns, rng_seed, progress,
                                 image, disk_size, card)
        else:
            self._build_from_snapshot(
                snapshot.load(booted_snapshot(size, smp, progress, image, disk_size, card)),
                hostname, epoch_ns, rng_seed)
        # A boot's idle time is skipped either way: it is the same for every boot.
        self.io.realtime = realtime
        try:
            self.shared.mount(self, volumes, keep=True)
            self.plug_network(network, published)
        except BaseException:
            self.close()
            raise

    # --- the two ways to build a VM ------------------------------------------------
    def _build_devices(self, size: int, smp: int, blocks, epoch_ns, rng_seed,
                       memory_fd=None) -> None:
        """The machine and its devices, not yet started (both ways build them so:
        a snapshot's sections name the same devices)."""
        self.log = ConsoleLog(keep_lines=40)
        self.io = HostIO(output=self.log.write)
        self.closed = False
        self.machine = None
        self._overlay_dir = None     # a restored VM's disk overlays, removed by close()
        self._clock_to_set = False   # the guest's clock must be set before the next command
        self._last_pid = 0           # where the clone's process ids go on from (new_identity)
        self.blocks = list(blocks)
        self.service = None          # () -> bool, between rounds of a command (see server.py)
        self._cancel = False
        self.shared = SharedFolders()   # volumes (shared_folders.py): in every VM
        self.card = None                # the network card (network_card.py), if any
        rng_seed = os.urandom(32) if rng_seed is None else bytes(rng_seed)
        self._mac = new_mac(rng_seed)
        try:
            self.machine = Machine(
                memory_size=size, harts=smp, io=self.io,
                rtc_epoch_ns=self.io.wall_clock_ns() if epoch_ns is None else epoch_ns,
                rng_seed=rng_seed, memory_fd=memory_fd)
        except OSError as error:
            self.close()
            raise HartvmError(f"cannot allocate {size} bytes of guest memory: {error}") from None
        console = VirtioConsole()
        self._terminal_output = None
        self.terminal = console.add_port(self._hvc_output, console=True)   # /dev/hvc0
        self.agent = Agent(console)
        board = self.machine.board
        board.attach_virtio("console", console)
        self.rng = Rng(hashlib.sha256(b"virtio-rng" + rng_seed).digest())
        board.attach_virtio("rng", self.rng)
        board.attach_virtio("volumes", self.shared.device)
        for index, block in enumerate(self.blocks):
            board.attach_virtio(f"disk{index}", block)

    def _attach_card(self) -> None:
        """The network card, in the slot after the disks'."""
        self.card = NetworkCard(self._mac)
        self.machine.board.attach_virtio("net", self.card.device)

    def _build_for_boot(self, size, smp, drives, hostname, epoch_ns, rng_seed, progress,
                        image: str, disk_size: int | None, card: bool) -> None:
        """Boot the guest ``image`` (fetched or built on first use) up to its
        agent's READY. An image's root filesystem is the first disk,
        /dev/vda, read through an overlay of this VM's own; a ``disk_size``
        larger than the image's is filled by the guest's filesystem at boot."""
        found = images.find(image, progress, VM)
        if disk_size is not None and disk_size < found.rootfs.stat().st_size:
            raise HartvmError(f"--disk-size {disk_size >> 20}M is smaller than the image "
                              f"{image} ({found.rootfs.stat().st_size >> 20}M)")
        blocks = open_drives(drives)
        overlay_dir = None
        if found.rootfs is not None:
            overlay_dir = scratch.make(OVERLAY_PREFIX)
            try:
                blocks.insert(0, Block(str(found.rootfs), overlay=str(overlay_dir / "root"),
                                       size=disk_size))
            except BaseException:
                shutil.rmtree(overlay_dir, ignore_errors=True)
                for block in blocks:
                    block.close()
                raise
        self._build_devices(size, smp, blocks, epoch_ns, rng_seed)
        self._overlay_dir = overlay_dir
        self.image = found.name
        try:
            if card:
                self._attach_card()
            guest = debian.default_guest(progress=progress)
            initrd = rootfs.default_initramfs(guest)
            bootargs = BOOTARGS.format(hostname=hostname)
            if found.rootfs is not None:
                bootargs += " hartvm.root=/dev/vda"
                if blocks[0].size > blocks[0].base_size:
                    bootargs += " hartvm.grow=1"
            self.machine.boot(str(guest.kernel), str(guest.firmware), str(initrd), bootargs)
            self.hostname = hostname
            result = self.machine.run(until=lambda: self.agent.ready or self.log.panicked,
                                      max_instructions=BOOT_INSTRUCTION_LIMIT)
            if not self.agent.ready:
                self._fail(result, "the guest did not start its agent")
        except BaseException:
            self.close()              # no disk file stays open behind a failed start
            raise

    def _build_from_snapshot(self, saved: snapshot.Snapshot, hostname, epoch_ns, rng_seed,
                             blocks=None) -> None:
        """A VM as ``saved`` holds it, then given a new identity: its RAM is mapped
        copy-on-write, not read. ``blocks``: the drives to attach (a fork's), else
        the snapshot's copies with overlays of this VM's own."""
        vm_state = saved.owner_section("vm", self.SAVE_VERSION)
        saved_hostname = vm_state.get("hostname")
        try:
            image = images.check_name(vm_state.get("image", images.BUSYBOX))
        except HartvmError as error:
            raise snapshot.SnapshotError(f"{saved.directory}: {error}") from None
        network_card = vm_state.get("network_card", False)
        if not isinstance(network_card, bool):
            raise snapshot.SnapshotError(f"{saved.directory}: bad network_card in the vm section")
        hostname = saved_hostname if hostname is None else hostname
        check_hostname(hostname)
        memory_fd = saved.open_memory()
        try:
            self._build_devices(saved.memory_size, saved.harts, [], epoch_ns, rng_seed,
                                memory_fd)
        finally:
            os.close(memory_fd)          # the mapping keeps the file
        self.image = image
        try:
            if blocks is None:
                if not all(info["readonly"] for info in saved.drives):
                    self._overlay_dir = scratch.make(OVERLAY_PREFIX)
                blocks = snapshot.open_drives(saved, self._overlay_dir)
            for index, block in enumerate(blocks):
                self.blocks.append(block)
                self.machine.board.attach_virtio(f"disk{index}", block)
            if network_card:
                self._attach_card()
            snapshot.restore_machine(self.machine, saved)
            if self.card is not None:
                self.card.device.connect(None)     # unplugged, and the guest hears of it
            self.agent.ready = True
            self.hostname = saved_hostname
            self.new_identity(hostname, epoch_ns, rng_seed)
        except BaseException:
            self.close()
            raise

    def plug_network(self, mode: str, publish=()) -> None:
        """Plug the VM's network card into a new passt for ``mode`` ("user" or
        "host"; "none" unplugs it), with ``publish``'s host ports forwarded to
        the guest, and a new MAC address; the guest brings the interface up
        before its next command. Idle guest time then passes in real time."""
        self._check_usable()
        check_mode(mode)
        published = parse_publish_list(publish, mode)
        if self.card is None:
            if mode != NO_NETWORK:
                raise HartvmError("this VM has no network card: it was started, or its "
                                  "snapshot taken, with --network none")
            return
        self.card.plug(mode, published, self._mac, self.io)
        if mode != NO_NETWORK:
            self.io.realtime = True

    @property
    def network_error(self) -> str | None:
        """Why the network went down while the VM ran (its passt ended), if it did."""
        return None if self.card is None else self.card.error

    @property
    def runner(self) -> bytes:
        """What runs a command instead of ``exec``: on an image's root (every image
        but busybox has one), the agent's run_program, so that commands are run
        by their path, not as busybox's applets (agent.IMAGE_RUNNER)."""
        return b"" if self.image == images.BUSYBOX else IMAGE_RUNNER

    # --- life cycle --------------------------------------------------------------
    def close(self) -> None:
        """Stop the guest for good. What it wrote to its drive files is made durable
        first (flush.py: the guest syncs and unmounts them, within a budget; the
        host fsyncs the files), then its disk files are closed and its RAM
        released. Copy-on-write overlays are not flushed: they end with the VM."""
        durable = [block for block in self.blocks
                   if not block.readonly and block.overlay_path is None]
        try:
            if durable and not self.closed and self.machine is not None and self.agent.ready:
                flush_guest(self)
        finally:
            self.closed = True
            for block in durable:
                try:
                    block.sync()
                except OSError as error:
                    log.warning("drive %s: %s: what the guest wrote may be lost",
                                block.path, error.strerror or error)
            for block in self.blocks:
                block.close()
            self.blocks = []
            self.shared.close()         # fsync and close what the guest had open on volumes
            if self.card is not None:
                self.card.unplug()
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

    # --- snapshots and clones ----------------------------------------------------------
    def snapshot(self, path) -> None:
        """Save the VM, between commands, as the snapshot directory ``path`` (see
        snapshot.py), with each drive as the guest sees it (a sparse copy: the
        drive files may change afterwards)."""
        self._save(path, copy_drives=True)

    def _save(self, path, copy_drives: bool) -> None:
        self._check_usable()
        if self.agent.busy or not self.agent.ready:
            raise HartvmError("a VM can be snapshotted only between commands")
        snapshot.save(path, self.machine, self.blocks,
                      ("vm", self.SAVE_VERSION, {"hostname": self.hostname,
                                                 "image": self.image,
                                                 "network_card": self.card is not None}),
                      copy_drives)

    @classmethod
    def restore(cls, path, hostname: str | None = None, realtime: bool = False,
                epoch_ns: int | None = None, rng_seed: bytes | None = None,
                network: str = NO_NETWORK, publish=()) -> "VM":
        """A running VM from the snapshot directory ``path``, in milliseconds: its
        RAM is mapped copy-on-write, not read. The guest then gets a new identity
        as a clone must: ``hostname`` (default: the saved one), the wall-clock time
        and fresh entropy (its kernel reseeds through the VM generation ID, its
        virtio-rng gets a new seed). With ``epoch_ns`` and ``rng_seed`` given,
        restores of one snapshot run the same commands identically.
        ``network``, ``publish``: as for a new VM, if the snapshot's VM had a
        network card (a new passt and MAC: connections do not survive)."""
        check_clock_and_seed(epoch_ns, rng_seed)
        check_mode(network)
        published = parse_publish_list(publish, network)
        self = cls.__new__(cls)
        self._build_from_snapshot(snapshot.load(path), hostname, epoch_ns, rng_seed)
        self.io.realtime = realtime
        try:
            self.plug_network(network, published)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def up(name: str | None = None, memory="256M", smp: int = 1, drives=(),
           snapshot=None, progress: bool = True, volumes=(),
           image: str = images.BUSYBOX, disk_size=None, network: str = NO_NETWORK,
           publish=(), gdb: int | None = None) -> RemoteVM:
        """A long-running VM in a process of its own: returns its ``RemoteVM`` handle
        (see client.py), which has this class's ``run``, ``snapshot`` and ``fork``."""
        if snapshot is None:
            images.find(image, progress, VM)        # built here, with its progress shown
        return RemoteVM.up(name=name, memory=memory, smp=smp, drives=drives,
                           snapshot=snapshot, progress=progress, volumes=volumes,
                           image=image, disk_size=disk_size, network=network,
                           publish=publish, gdb=gdb)

    def fork(self, count: int = 1) -> list["VM"]:
        """``count`` clones of this VM in this process, each with its own identity.
        They share this VM's RAM as it is now through one snapshot's RAM file,
        mapped copy-on-write by each (the file's pages are in the host's page cache
        once). Drives are forked as a VM process forks them (``freeze_drives``,
        then ``clone_drives`` in each clone): no copy of a disk is made."""
        if not 1 <= count <= MAX_CLONES:
            raise HartvmError(f"bad fork count {count}: 1 to {MAX_CLONES}")
        self.freeze_drives()
        staging = scratch.make("hartvm-fork-")
        clones = []
        try:
            self._save(staging / "snapshot", copy_drives=False)
            saved = snapshot.load(staging / "snapshot")
            for index in range(count):
                clone = VM.__new__(VM)
                clone._build_from_snapshot(saved, numbered(self.hostname, index + 1, 64), None,
                                           None, [block.duplicate() for block in self.blocks])
                clones.append(clone)
                clone._overlay_dir = scratch.make(OVERLAY_PREFIX)
                clone.clone_drives(clone._overlay_dir)
                if self.card is not None:
                    clone.plug_network(self.card.mode)      # its own passt, no ports
        except BaseException:
            for clone in clones:
                clone.close()
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)   # the mappings stay
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
                    self._overlay_dir = scratch.make(OVERLAY_PREFIX)
                directory = self._overlay_dir
            block.fork_overlay(str(Path(directory) / f"disk{index}"))

    def clone_drives(self, directory) -> None:
        """In a clone (after ``freeze_drives`` in its parent): each writable drive
        goes on with an overlay of its own in ``directory``, a copy of the
        parent's. Both fork paths take this one step: ``fork`` here, and the VM
        process's ``os.fork`` (server.py)."""
        for index, block in enumerate(self.blocks):
            if not block.readonly:
                block.fork_overlay(str(Path(directory) / f"disk{index}"))

    def new_identity(self, hostname: str, epoch_ns: int | None = None,
                     rng_seed: bytes | None = None) -> None:
        """What a clone needs so that it is not its twin: fresh entropy for the kernel
        (a new VM generation ID makes Linux reseed at once) and for virtio-rng, the
        wall-clock time, and its own hostname (set before the next command)."""
        check_hostname(hostname)
        check_clock_and_seed(epoch_ns, rng_seed)
        seed = os.urandom(32) if rng_seed is None else bytes(rng_seed)
        devices = self.machine.board.devices
        devices["vmgenid"].new_generation(hashlib.sha256(b"vmgenid" + seed).digest()[:16])
        self.rng.reseed(hashlib.sha256(b"virtio-rng" + seed).digest())
        rtc = devices["rtc"]
        rtc.epoch_ns += (self.io.wall_clock_ns() if epoch_ns is None else epoch_ns) - rtc.now()
        self.hostname = hostname
        # Clones of one snapshot would hand out the same process ids, and user
        # space seeds from them (busybox's $RANDOM mixes in its pid): each clone
        # goes on from a pid of its own (kernel/ns_last_pid, Linux's
        # checkpoint/restore knob; pid_max is 32768 for the guest's few harts).
        pid_seed = int.from_bytes(hashlib.sha256(b"last-pid" + seed).digest()[:4], "little")
        self._last_pid = FIRST_CLONE_PID + pid_seed % (PID_MAX - 2 * FIRST_CLONE_PID)
        self._mac = new_mac(seed)          # for the next plug_network
        self._clock_to_set = True

    def apply_identity(self) -> None:
        """Set the new clock and hostname now rather than with the next command (for
        a guest that runs on its own: its daemons see them at once)."""
        if self._clock_to_set or (self.card is not None and self.card.script_due):
            self.run(["true"], check=True)

    def _set_identity(self, script: bytes) -> None:
        """Run the identity script in the agent and wait for it: after a restore
        this is the guest's first answer, so a guest that gives none within
        IDENTITY_BUDGET instructions (a snapshot whose RAM is garbage spins
        forever) is given up, deterministically, never waited for; and one
        that takes IDENTITY_SECONDS of host time for them (trapping on every
        instruction, a thousand times slower) is given up as well."""
        self.agent.configure(script)
        give_up = time.monotonic() + IDENTITY_SECONDS
        result = self.machine.run(until=lambda: self.agent.configured or self.log.panicked or
                                  self.agent.error is not None or time.monotonic() > give_up,
                                  max_instructions=IDENTITY_BUDGET * len(self.machine.harts))
        if not self.agent.configured:
            self._fail(result, "the guest agent did not answer")

    def _identity_script(self) -> bytes:
        """Shell lines that give the guest its wall-clock time, hostname and
        process ids of its own, and bring its network card up once plugged."""
        lines = []
        if self._clock_to_set:
            self._clock_to_set = False
            seconds = self.machine.board.devices["rtc"].now() // 10**9
            lines.append(f"date -s @{seconds}; echo {self.hostname} >/proc/sys/kernel/hostname; "
                         f"echo {self._last_pid} >/proc/sys/kernel/ns_last_pid".encode())
        if self.card is not None:
            lines.append(self.card.pending_script())
        return b"; ".join(line for line in lines if line)

    def cancel(self) -> None:
        """Kill the running command (from ``service``, when its client went away);
        ``run`` then returns its status, 137."""
        self._cancel = True

    def idle(self, until) -> None:
        """Let the guest run without a command (what it started in the background
        runs on) until ``until()`` is true, checked between rounds and whenever one
        of ``io``'s wake-up descriptors is readable."""
        self._check_usable()
        result = self.machine.run(until=lambda: until() or self.log.panicked or
                                  self.agent.error is not None)
        if result.stop is not Stop.STOPPED or self.log.panicked or self.agent.error:
            self._fail(result, "the guest stopped while idle")

    def _check_usable(self) -> None:
        if self.closed:
            raise HartvmError("this VM is closed")

    # --- commands ----------------------------------------------------------------
    def run(self, args, input: bytes | str | None = None, env=None, cwd=None,
            timeout: float | None = None, stdout=None, stderr=None,
            stdin_fd: int | None = None, check: bool = False, text: bool = False,
            encoding: str | None = None, errors: str | None = None,
            volumes=None) -> CommandResult:
        """Run a command in the guest and wait for it, like ``subprocess.run``.

        ``args`` is an argv list (or a string for ``sh -c``); ``env`` adds
        variables; ``cwd`` is the working directory. The command reads
        ``input`` (or what comes from the file descriptor ``stdin_fd``) as its
        stdin, then end of file. Its output is collected, or passed as it
        comes to the ``stdout``/``stderr`` callables if given. ``timeout`` is
        in host seconds: ``CommandTimeout`` then carries the output so far.
        ``check``: a non-zero status raises ``CommandFailed``. ``text`` (or an
        ``encoding``, ``errors``): str in and out (see results.CommandIO).
        ``volumes``: host directories shared for this command only
        ("HOST_DIR:GUEST_DIR[:ro]", see volumes.py).
        """
        if isinstance(args, (str, bytes)):
            args = ["sh", "-c", args]
        args = list(args)
        io = CommandIO(args, input, text, encoding, errors, stdout, stderr)
        script = command_script(args, env, cwd, self.runner)   # bad arguments fail first
        exports = self.shared.mount(self, parse_volumes(volumes, self.shared.mounted)) \
            if volumes else {}
        try:
            result = self._execute(script, args, io.input, timeout,
                                   io.stdout, io.stderr, stdin_fd)
        except CommandTimeout as error:
            raise io.timed_out(error, timeout) from None
        finally:
            self.shared.after_command(self, exports)
        return io.result(result.returncode, result.instructions, check)

    def _execute(self, script: bytes, args, input, timeout, stdout, stderr, stdin_fd,
                 stdin_port=None, input_filter=None, guard=None) -> CommandResult:
        """Run ``script`` as the command; ``stdin_port`` (the terminal) takes what
        comes from ``stdin_fd`` instead of the command's stdin port; ``guard``:
        a CallerCode that wraps the caller's callables (one is made if none)."""
        self._check_usable()
        check_command_io(input, timeout, stdout, stderr, stdin_fd)   # before anything is sent
        if not self.agent.ready or self.agent.busy:
            raise HartvmError("the guest agent is not ready for a command")
        identity = self._identity_script()
        if identity:
            self._set_identity(identity)
        guard = guard or CallerCode()
        guard.on_failure = self.cancel
        collected_out, collected_err = [], []
        agent, machine = self.agent, self.machine
        agent.start(script, guard.wrap(stdout) if stdout else collected_out.append,
                    guard.wrap(stderr) if stderr else collected_err.append)
        if stdin_fd is None or stdin_port is not None:
            agent.stdin.send(input or b"")
            agent.stdin.end_input()
        stdin = None
        hang_up_at = None

        def terminal_ended() -> None:
            # The terminal is gone (its input ended). A console port cannot be hung
            # up, so the guest's terminal gets the end-of-file key, Ctrl-D, which
            # ends a shell that reads it; a session that still runs HANGUP_GRACE
            # seconds after the last key was delivered is killed, as a hung-up
            # terminal's session is.
            nonlocal hang_up_at
            port.send(b"\x04")
            hang_up_at = time.monotonic() + HANGUP_GRACE
        if stdin_fd is not None:
            port = stdin_port or agent.stdin
            stdin = self.io.add_input(stdin_fd, port.send, lambda: port.pending_bytes,
                                      terminal_ended if stdin_port is not None
                                      else port.end_input, guard.wrap_filter(input_filter))
        deadline = None if timeout is None else time.monotonic() + timeout
        self._cancel = False
        timed_out, interrupted, kill_started, next_kill = False, False, None, 0.0

        def finished() -> bool:
            nonlocal timed_out, interrupted, kill_started, next_kill, hang_up_at
            if self.service is not None and self.service():
                interrupted = True
                return True
            if agent.status is not None or self.log.panicked or agent.error is not None:
                return True
            now = time.monotonic()
            if deadline is not None and now > deadline:
                timed_out = True
            if hang_up_at is not None and now > hang_up_at:
                if port.pending_bytes:
                    hang_up_at = now + HANGUP_GRACE     # from the last key delivered
                else:
                    self._cancel = True
            if timed_out or self._cancel:
                # Kill the command (its EXIT follows); a guest that does not let
                # it go within KILL_GRACE seconds is given up.
                kill_started = kill_started or now
                if now >= next_kill:
                    agent.kill()
                    next_kill = now + KILL_REPEAT
                return now > kill_started + KILL_GRACE
            return False

        started = machine.instructions
        try:
            result = machine.run(until=finished)
        except BaseException:
            self._abandon_command()        # Ctrl-C, or a signal's exception
            raise
        finally:
            if stdin is not None:
                self.io.remove_input(stdin)
        if interrupted:
            raise Interrupted()
        if agent.status is None:
            if timed_out or (result.stop is Stop.HALTED and timeout is not None):
                self.closed = True
                raise CommandTimeout(f"the command timed out after {timeout:g} s and could not "
                                     f"be killed; the VM is closed")
            self._fail(result, "the guest agent did not finish the command")
        if guard.error is not None:
            raise guard.error              # the command was killed for it, the VM runs on
        if timed_out:
            raise CommandTimeout(f"the command timed out after {timeout:g} s and was killed")
        return CommandResult(args, agent.status, b"".join(collected_out), b"".join(collected_err),
                             machine.instructions - started)

    def _abandon_command(self) -> None:
        """The caller was interrupted while a command ran: kill the command and
        wait up to KILL_GRACE host seconds for its end, its output dropped, so that
        the VM is ready for the next one; a guest that does not let it go is closed."""
        agent = self.agent
        if self.closed or not agent.busy:
            return
        agent.drop_output()
        self._terminal_output = None
        give_up = time.monotonic() + KILL_GRACE
        next_kill = 0.0

        def ended() -> bool:
            nonlocal next_kill
            now = time.monotonic()
            if now >= next_kill:
                agent.kill()
                next_kill = now + KILL_REPEAT
            return agent.status is not None or self.log.panicked or agent.error is not None \
                or now > give_up
        try:
            self.machine.run(until=ended)
        finally:
            if agent.status is None:
                self.closed = True

    # --- an interactive shell -------------------------------------------------------
    def shell(self, terminal_fd: int, output, rows: int = 24, columns: int = 80,
              term: str = "vt100", input_filter=None, args=None, window=None,
              timeout: float | None = None, env=None, cwd=None) -> int:
        """A login shell (or the command ``args``, with ``env`` and ``cwd`` as for
        ``run``) on the guest's terminal,
        /dev/hvc0, as its controlling terminal, connected to the host terminal
        ``terminal_fd`` (in raw mode) and ``output``; returns its exit status.
        ``window``: a frontends.console.WindowSize whose changes resize the
        guest's terminal as they come; ``timeout`` as for ``run``."""
        check_terminal(terminal_fd, output, rows, columns, term, input_filter, window)
        if args is not None:
            # The command as ``run`` would run it, in a shell of its own on the terminal.
            command = b"sh -c " + quote(command_script(list(args), env, cwd, self.runner))
        else:
            # A login shell, bash where the image has it.
            command = b"$login -l"
        self.terminal.resize(rows, columns)
        # Started by the image's own setsid (see IMAGE_RUNNER: busybox's shell
        # would prefer its own setsid and sh).
        script = b"export TERM=" + quote(term.encode()) + \
            b"; login=sh; [ -x /bin/bash ] && login=bash" \
            b"; " + (self.runner or b"exec ") + b"setsid -c " + command + \
            b" </dev/hvc0 >/dev/hvc0 2>&1"
        guard = CallerCode()
        self._terminal_output = guard.wrap(output)
        resizes = None
        if window is not None:
            def resize(_) -> None:
                rows, columns = window.size()
                check_terminal_size(rows, columns)
                self.terminal.resize(rows, columns)
            resizes = self.io.add_input(window.fd, guard.wrap(resize))
        try:
            return self._execute(script, list(args or ["sh", "-l"]), None, timeout, None, None,
                                 terminal_fd, stdin_port=self.terminal,
                                 input_filter=input_filter, guard=guard).returncode
        finally:
            self._terminal_output = None
            if resizes is not None:
                self.io.remove_input(resizes)
