"""The RV64 hart: state layout, decoder, numba interpreter, CSRs and traps.

Compiled code is cached on disk (``cache=True``). Numba keys each cached
function by its own source file only, so a caller compiled with an inlined
callee from another file would survive a change of that callee. The cache
therefore lives in a directory named by the digest of this package's
sources and the numba version (code_digest.py): any change starts a fresh
cache.
Only the few most recently used of these directories are kept.
"""

import os
import pathlib
import re
import shutil

import numba

from .. import paths
from ..code_digest import code_digest

KEEP_CACHES = 3


def _cache_dir() -> str:
    digest = code_digest(pathlib.Path(__file__).resolve().parent, salt=numba.__version__)
    base = os.environ.get("NUMBA_CACHE_DIR") or str(paths.cache_home() / "numba")
    return os.path.join(base, digest[:16])


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
