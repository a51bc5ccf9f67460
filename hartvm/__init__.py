"""hartvm: a RISC-V RV64 full-system virtual machine written in Python and numba."""

__version__ = "0.1.0"

from .errors import HartvmError  # noqa: E402
from .machine import Machine, RunResult, Stop  # noqa: E402
from .vmm.vm import VM, CommandResult, CommandTimeout, GuestError  # noqa: E402

__all__ = ["CommandResult", "CommandTimeout", "GuestError", "HartvmError", "Machine",
           "RunResult", "Stop", "VM", "__version__"]
