"""Where long-running VMs live: one directory per VM in the user's state directory.

``$HARTVM_STATE_DIR`` (default ``$XDG_STATE_HOME/hartvm``, that is
``~/.local/state/hartvm``) holds ``vms/<name>/`` for every VM started with
``hartvm up``, ``restore`` or ``fork``::

    control.sock   the VM process's control socket (see protocol.py)
    info.json      name, pid, the process's start time, guest memory, harts, start time
    starting.json  the same, written by whoever spawned the process, until info.json exists
    log            the VM process's own messages and its guest's serial console
                   (16 MiB of it at most), which ``hartvm logs`` shows
    disks/         copy-on-write overlays of its drives

Making the directory claims the name (``mkdir`` is atomic), so concurrent
``up``/``fork`` never give two VMs one name. A VM whose process is gone
(killed, host rebooted) is reported as dead, never waited for; ``stop``
removes what it left. Nothing here imports numpy, so ``hartvm ps`` is fast.

The state directory and ``vms/`` are trusted only if they belong to this
user and no one else can write to them (as ssh treats ``~/.ssh``): another
user who could create entries there could take a VM's name and read the
commands, environment and input sent to it.
"""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import HartvmError

NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,47}")   # also its guest hostname
SOCKET = "control.sock"
INFO = "info.json"
STARTING = "starting.json"
LOG = "log"
ABANDONED_AFTER = 10   # seconds; claiming a name and spawning its process takes milliseconds


class NoSuchVM(HartvmError):
    """No VM has the name asked for (an HTTP API answers 404)."""


class NameTaken(HartvmError):
    """A VM has the name asked for already (an HTTP API answers 409)."""


def state_dir() -> Path:
    return paths.state_home()


def vms_dir() -> Path:
    """``vms/`` in the state directory, both checked to be this user's alone
    (where they exist)."""
    vms = state_dir() / "vms"
    for directory in (vms.parent, vms):
        _check_private(directory)
    return vms


def _check_private(directory: Path) -> None:
    try:
        info = directory.stat()
    except FileNotFoundError:
        return                                   # made later, with mode 0700
    except OSError as error:
        raise HartvmError(f"state directory {directory}: {error.strerror or error}") from None
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        who = "another user's" if info.st_uid != os.getuid() else "writable by others"
        raise HartvmError(f"state directory {directory} is {who}: refusing to use it "
                          f"(chmod go-w it, or set HARTVM_STATE_DIR)")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise HartvmError(f"bad VM name {name!r}: use up to 48 lower-case letters, digits, "
                          f"'-' and '.', starting with a letter or digit")
    return name


def claim(name: str | None, prefix: str = "vm") -> tuple[str, Path]:
    """Create the directory of a new VM: ``name``, or the first free ``prefix-N``
    (``prefix`` shortened as the name rules need)."""
    vms = vms_dir()
    try:
        # Control sockets: this user's only (the parents above get the umask's mode).
        vms.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        vms.mkdir(exist_ok=True, mode=0o700)
    except OSError as error:
        raise HartvmError(f"cannot create the state directory {vms}: "
                          f"{error.strerror or error} (set HARTVM_STATE_DIR)") from None
    if name is not None:
        check_name(name)
        candidates = [name]
    else:
        candidates = (numbered(prefix, n) for n in range(1, 1_000_000))
    for candidate in candidates:
        try:
            (vms / candidate).mkdir(mode=0o700)
        except FileExistsError:
            if name is not None:
                raise NameTaken(f"a VM named {name} exists already (hartvm ps; "
                                  f"hartvm stop {name})") from None
            continue
        except OSError as error:
            raise HartvmError(f"cannot create {vms / candidate}: "
                              f"{error.strerror or error}") from None
        return candidate, vms / candidate
    raise HartvmError("no free VM name")


def numbered(prefix: str, number: int, limit: int = 48) -> str:
    """``prefix-number``, ``prefix`` shortened to keep it within ``limit`` characters
    (48 for a VM name, 64 for a hostname)."""
    suffix = f"-{number}"
    return prefix[:limit - len(suffix)].rstrip(".-") + suffix


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (tells a VM
    process from an unrelated one that got its pid later), or None if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) if fields[0] != "Z" else None


@dataclass
class VMInfo:
    """A long-running VM as ``hartvm ps`` shows it."""
    name: str
    state: str                  # running, starting or dead
    pid: int
    memory: int                 # guest RAM, bytes
    harts: int
    started: float              # Unix time
    private: int = 0            # host memory only this VM uses, bytes
    shared: int = 0             # host memory it shares with other processes (forks, KSM), bytes
    parent: str = ""            # the VM it was forked from
    directory: Path | None = None

    @property
    def uptime(self) -> float:
        return max(time.time() - self.started, 0.0)

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET


def write_info(directory: Path, **fields) -> None:
    fields.setdefault("process_start", process_start_time(fields["pid"]))
    temporary = directory / (INFO + ".tmp")
    temporary.write_text(json.dumps(fields))
    os.replace(temporary, directory / INFO)


def write_starting(directory: Path, pid: int, memory: int, harts: int) -> None:
    """What the starting hartvm knows of a VM process it just spawned (until the VM
    writes its info): a VM killed while it starts is then seen as dead."""
    (directory / STARTING).write_text(json.dumps({
        "pid": pid, "process_start": process_start_time(pid), "memory": memory,
        "harts": harts, "started": time.time()}))


def read_info(directory: Path) -> VMInfo | None:
    """The VM in ``directory`` (running, starting or dead); None for a directory
    that was only just claimed."""
    for name, state in ((INFO, "running"), (STARTING, "starting")):
        try:
            fields = json.loads((directory / name).read_text())
            pid = int(fields["pid"])
            info = VMInfo(name=directory.name, state=state, pid=pid,
                          memory=int(fields["memory"]), harts=int(fields["harts"]),
                          started=float(fields["started"]),
                          parent=str(fields.get("parent", "")), directory=directory)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if process_start_time(pid) != fields.get("process_start"):
            info.state = "dead"
        else:
            info.private, info.shared = memory_use(pid)
        return info
    if _abandoned(directory):
        return VMInfo(directory.name, "dead", 0, 0, 0, directory.stat().st_mtime,
                      directory=directory)
    return None


def memory_use(pid: int) -> tuple[int, int]:
    """(private, shared) resident bytes of a process, from /proc/PID/smaps_rollup.
    Pages a fork shares with its parent, and pages KSM merged, are shared."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                values[name] = int(parts[0]) * 1024
    except OSError:
        return 0, 0
    return (values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
            values.get("Shared_Clean", 0) + values.get("Shared_Dirty", 0))


def list_vms() -> list[VMInfo]:
    """Every long-running VM of this user, dead ones included, by name."""
    vms = vms_dir()
    if not vms.is_dir():
        return []
    found = []
    for directory in sorted(vms.iterdir()):
        info = read_info(directory)
        if info is not None:
            found.append(info)
    return found


def _abandoned(directory: Path) -> bool:
    """A directory left without any info for ABANDONED_AFTER seconds: whoever claimed it
    died before it could start the VM."""
    try:
        return time.time() - directory.stat().st_mtime > ABANDONED_AFTER
    except OSError:
        return False


def find(name: str) -> VMInfo:
    check_name(name)
    directory = vms_dir() / name
    info = read_info(directory) if directory.is_dir() else None
    if info is None:
        if directory.is_dir():
            return VMInfo(name, "starting", 0, 0, 0, time.time(), directory=directory)
        raise NoSuchVM(f"no VM named {name} (hartvm ps lists them)")
    return info


def remove(directory: Path) -> None:
    """Remove what a stopped or dead VM left behind."""
    shutil.rmtree(directory, ignore_errors=True)
