"""hartvm: a RISC-V RV64 full-system virtual machine written in Python and numba."""

__version__ = "0.1.0"

from .errors import HartvmError  # noqa: E402
from .machine import Machine, RunResult, Stop  # noqa: E402

__all__ = ["HartvmError", "Machine", "RunResult", "Stop", "__version__"]
