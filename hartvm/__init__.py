"""hartvm: a RISC-V RV64 full-system virtual machine written in Python and numba.

The names below are loaded on first use, so that ``import hartvm`` (and the
light commands of the CLI) do not pay for numpy and numba.
"""

import importlib

__version__ = "0.1.0"

from .errors import HartvmError  # noqa: E402

_LAZY = {"Machine": "machine", "RunResult": "machine", "Stop": "machine", "HostIO": "hostio",
         "VM": "vmm.vm", "CommandResult": "vmm.vm", "CommandTimeout": "vmm.vm",
         "GuestError": "vmm.vm", "CommandFailed": "vmm.results", "SnapshotError": "vmm.snapshot",
         "RemoteVM": "vmm.client", "VMInfo": "vmm.registry", "list_vms": "vmm.registry"}

__all__ = ["HartvmError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'hartvm' has no attribute {name!r}")
