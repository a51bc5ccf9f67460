"""What running a command in a guest gives back, and how it fails.

Shared by the in-process ``VM`` and the handle of a VM in its own process
(``RemoteVM``); importable without numpy.
"""

from dataclasses import dataclass

from ..errors import HartvmError


class GuestError(HartvmError):
    """The guest failed: its kernel panicked, its agent died or it hung."""


class CommandTimeout(HartvmError):
    """A command did not finish in time. It was killed and the VM runs on, unless the
    guest did not let it go: then the VM is closed (the message says which)."""


@dataclass
class CommandResult:
    """What ``VM.run`` returns, like ``subprocess.CompletedProcess``."""
    args: list
    returncode: int
    stdout: bytes
    stderr: bytes
    instructions: int = 0        # guest instructions executed while the command ran


def check_status(args, status: int, stderr: bytes) -> None:
    """``run(check=True)``: a failing command raises."""
    if status != 0:
        raise HartvmError(f"command {args!r} exited with status {status}"
                          + (f": {stderr[-500:].decode(errors='replace')}" if stderr else ""))


class Interrupted(Exception):
    """The host stopped the VM's run: its ``service`` callback asked to (the VM
    process was told to stop, or the client of a one-off run went away)."""
