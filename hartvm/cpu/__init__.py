"""The RV64 hart: state layout, decoder, numba interpreter, CSRs and traps.

Compiled code is cached on disk (``cache=True``). Numba keys each cached
function by its own source file only, so a caller compiled with an inlined
callee from another file would survive a change of that callee. The cache
therefore lives in a directory named by a hash of every source file of
this package (and the numba version): any change starts a fresh cache.
"""

import hashlib
import os
import pathlib

import numba


def _cache_dir() -> str:
    sources = sorted(pathlib.Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256(numba.__version__.encode())
    for source in sources:
        digest.update(source.name.encode() + source.read_bytes())
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hartvm", "numba")
    return os.path.join(base, digest.hexdigest()[:16])


numba.config.CACHE_DIR = _cache_dir()
