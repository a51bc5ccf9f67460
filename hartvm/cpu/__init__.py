"""The RV64 hart: state layout, decoder, numba interpreter, CSRs and traps.

Compiled code is cached on disk (``cache=True``). Numba keys each cached
function by its own source file only, so a caller compiled with an inlined
callee from another file would survive a change of that callee. The cache
therefore lives in a directory named by a hash of every source file of
this package (and the numba version): any change starts a fresh cache.
Only the few most recently used of these directories are kept.
"""

import hashlib
import os
import pathlib
import re
import shutil

import numba

KEEP_CACHES = 3


def _cache_dir() -> str:
    sources = sorted(pathlib.Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256(numba.__version__.encode())
    for source in sources:
        digest.update(source.name.encode() + source.read_bytes())
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hartvm", "numba")
    return os.path.join(base, digest.hexdigest()[:16])


def _prune(current: str) -> None:
    """Remove cache directories of other hartvm sources, but for the newest few."""
    base = os.path.dirname(current)
    try:
        os.makedirs(current, exist_ok=True)
        os.utime(current)                 # mark it as just used
        others = [os.path.join(base, name) for name in os.listdir(base)
                  if re.fullmatch(r"[0-9a-f]{16}", name) and os.path.join(base, name) != current]
        others.sort(key=os.path.getmtime, reverse=True)
        for stale in others[KEEP_CACHES - 1:]:
            shutil.rmtree(stale, ignore_errors=True)
    except OSError:
        pass                              # a read-only or shared cache: leave it alone


numba.config.CACHE_DIR = _cache_dir()
_prune(numba.config.CACHE_DIR)
