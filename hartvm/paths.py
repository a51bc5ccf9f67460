"""The user's directories where hartvm keeps its files (XDG Base Directory spec).

- ``cache_home()``: ``$XDG_CACHE_HOME/hartvm`` (default ``~/.cache/hartvm``):
  what can be fetched or built again, such as the Debian packages of the
  default guest (guest/debian.py), its initramfs, snapshots and numba's
  compiled code (cpu/__init__.py).
- ``state_home()``: ``$HARTVM_STATE_DIR``, else ``$XDG_STATE_HOME/hartvm``
  (default ``~/.local/state/hartvm``): the long-running VMs (vmm/registry.py).

Only the standard library is imported here: light commands such as
``hartvm ps`` use these directories without paying for numpy and numba.
"""

import os
from pathlib import Path


def _xdg_base(variable: str, *default: str) -> str:
    """``$variable``, or ``~/<default>`` when it is unset, empty or relative."""
    base = os.environ.get(variable, "")
    # The XDG spec says a relative path in an XDG_* variable is invalid and
    # must be ignored: it would name a different directory in every working
    # directory.
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), *default)
    return base


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/hartvm``, or ``~/.cache/hartvm``."""
    return Path(_xdg_base("XDG_CACHE_HOME", ".cache")) / "hartvm"


def state_home() -> Path:
    """``$HARTVM_STATE_DIR``, else ``$XDG_STATE_HOME/hartvm``, or ``~/.local/state/hartvm``."""
    # hartvm's own variable is taken as given (relative too): the user named
    # this very directory, for example for one test run.
    explicit = os.environ.get("HARTVM_STATE_DIR")
    if explicit:
        return Path(explicit)
    return Path(_xdg_base("XDG_STATE_HOME", ".local", "state")) / "hartvm"
